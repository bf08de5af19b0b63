"""The sweep report's figures for experiment=cot_vs_wasserstein: the two flows side by side."""
from __future__ import annotations

from typing import Dict

import numpy as np
import pandas as pd

from ..rundir.contract import DEPTHS as DEPTHS_FILE
from ..rundir.contract import FINISHED
from ..rundir.contract import METRICS as METRICS_FILE
from .style import MARKS, colours, label, subplots


def geometry_figures(df: pd.DataFrame, read) -> Dict[str, object]:
    """COT against Wasserstein side by side (experiment=cot_vs_wasserstein): risk and the depth marginal's
    distance to Lebesgue over flow time (one line per job, coloured by width), and the final depth histograms."""

    ok = df[df["status"].isin(FINISHED)]
    geometries = list(dict.fromkeys(ok["sweep.optim.geometry"]))
    widths = sorted(set(ok["cfg.model.M"]))
    cmap = colours("viridis", max(len(widths), 2))
    figs = {}
    for name, column, ylabel in (("risk", "risk_train", label("risk_train")),
                                 ("depth_drift", "depth_w2_uniform", "W_2(depth marginal, uniform)")):
        fig, axes = subplots(1, len(geometries), figsize=(5 * len(geometries), 4), sharey=True, squeeze=False)
        for ax, geometry in zip(axes[0], geometries):
            for _, r in ok[ok["sweep.optim.geometry"] == geometry].iterrows():
                m = read(r["path"], METRICS_FILE)
                if m is not None and column in m:
                    m = m[["flow_time", column]].dropna()
                    ax.plot(m["flow_time"], m[column], color=cmap(widths.index(r["cfg.model.M"])), alpha=0.8)
            ax.set_title(f"optim.geometry={geometry}", fontsize=10)
            ax.set_xlabel("flow time t")
            ax.set_yscale("log" if column == "risk_train" else "linear")
            legend_unfinished(ax, df[df["sweep.optim.geometry"] == geometry])
        axes[0][0].set_ylabel(ylabel)
        for i, M in enumerate(widths):
            axes[0][-1].plot([], [], color=cmap(i), label=f"model.M={M}")
        for ax in axes[0]:
            if ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=7)
        figs[f"geometry_{name}"] = fig
    figs["geometry_final_depths"] = _final_depths(df, geometries, read)
    return figs


def legend_unfinished(ax, jobs: pd.DataFrame) -> None:
    """Legend entries counting the jobs of this panel that did not finish (they draw no curve)."""
    for status, group in jobs[~jobs["status"].isin(FINISHED)].groupby("status"):
        marker, colour, name = MARKS.get(status, ("o", "0.55", status))
        ax.plot([], [], marker, color=colour, linestyle="none", label=f"{name} ({len(group)} jobs)")


def _final_depths(ok_and_bad: pd.DataFrame, geometries: list, read):

    ok = ok_and_bad[ok_and_bad["status"].isin(FINISHED)]
    fig, axes = subplots(1, len(geometries), figsize=(5 * len(geometries), 3.6), sharey=True, squeeze=False)
    for ax, geometry in zip(axes[0], geometries):
        shares = []
        for path in ok[ok["sweep.optim.geometry"] == geometry]["path"]:
            d = read(path, DEPTHS_FILE)
            if d is not None and not d.empty:
                last = d[d["step"] == d["step"].max()]
                shares.append((last["count"] / last["count"].sum()).to_numpy())
                edges = last["bin_lo"].to_numpy()
        if shares:
            ax.bar(edges, np.mean(shares, axis=0), width=edges[1] - edges[0] if len(edges) > 1 else 1.0, align="edge")
            ax.axhline(1.0 / len(edges), color="k", ls=":", label="uniform (the layers' Lebesgue marginal)")
        ax.set_title(f"final depths, optim.geometry={geometry} ({len(shares)} jobs)", fontsize=10)
        ax.set_xlabel("depth s")
        legend_unfinished(ax, ok_and_bad[ok_and_bad["sweep.optim.geometry"] == geometry])
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("share of particles")
    return fig
