"""The sweep report's page for experiment=cot_vs_wasserstein: the two flows side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..rundir.contract import DEPTHS as DEPTHS_FILE
from ..rundir.contract import FINISHED
from ..rundir.contract import METRICS as METRICS_FILE
from .style import DOUBLE, MARKS, label, log_axis, palette, subplots


def geometry_figure(df: pd.DataFrame, read):
    """One column per geometry: the risk and the depth marginal's W₂ distance to the uniform one over flow time
    (a line per run, coloured by width), and the final depth histogram (mean over runs) against the uniform
    marginal of a ResNet's layers."""
    ok = df[df["status"].isin(FINISHED)]
    geometries = list(dict.fromkeys(df["sweep.optim.geometry"].dropna()))
    widths = sorted(set(ok["cfg.model.M"])) if len(ok) else []
    colours = palette(len(widths))
    fig, axes = subplots(3, len(geometries), width=DOUBLE, height=6.6, squeeze=False, sharey="row")
    for col, geometry in enumerate(geometries):
        mine = ok[ok["sweep.optim.geometry"] == geometry]
        for row, column in enumerate(("risk_train", "depth_w2_uniform")):
            ax = axes[row, col]
            for _, r in mine.iterrows():
                m = read(r["path"], METRICS_FILE)
                if m is not None and column in m:
                    m = m[["flow_time", column]].dropna()
                    ax.plot(m["flow_time"], m[column], color=colours[widths.index(r["cfg.model.M"])], alpha=0.8, lw=0.9)
            if column == "risk_train" and ax.lines:
                log_axis(ax)
            ax.set_xlabel(label("flow_time"))
        axes[0, col].set_title(f"{label('optim.geometry')}: {geometry} ({len(mine)} runs)")
        _final_depths(axes[2, col], mine, read)
        _legend_unfinished(axes[0, col], df[df["sweep.optim.geometry"] == geometry])
    axes[0, 0].set_ylabel(label("risk_train"))
    axes[1, 0].set_ylabel(label("depth_w2_uniform"))
    axes[2, 0].set_ylabel("share of particles")
    for i, M in enumerate(widths):
        axes[0, -1].plot([], [], color=colours[i], label=f"{label('model.M')} = {M}")
    for ax in axes[:, -1]:
        if ax.get_legend_handles_labels()[1]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=6)
    fig.subplots_adjust(left=0.09, right=0.74, hspace=0.6, wspace=0.25, top=0.95, bottom=0.08)
    return fig


def _legend_unfinished(ax, runs: pd.DataFrame) -> None:
    """Legend entries counting the runs of this column that did not finish (they draw no curve)."""
    for status, group in runs[~runs["status"].isin(FINISHED)].groupby("status"):
        marker, colour, name = MARKS.get(status, ("o", "0.55", status))
        ax.plot([], [], marker, color=colour, linestyle="none", label=f"{name} ({len(group)} runs)")
    if ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=6, loc="lower left")


def _final_depths(ax, ok: pd.DataFrame, read) -> None:
    shares, edges = [], None
    for path in ok["path"]:
        d = read(path, DEPTHS_FILE)
        if d is not None and not d.empty:
            last = d[d["step"] == d["step"].max()]
            shares.append((last["count"] / last["count"].sum()).to_numpy())
            edges = last["bin_lo"].to_numpy()
    if shares:
        ax.bar(edges, np.mean(shares, axis=0), width=edges[1] - edges[0] if len(edges) > 1 else 1.0, align="edge",
               color="tab:blue", alpha=0.8, label="final depths (mean over runs)")
        ax.axhline(1.0 / len(edges), color="k", ls=":", lw=0.9, label="uniform on [0, 1]")
    else:
        ax.text(0.5, 0.5, "no depth histograms", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("depth s")
