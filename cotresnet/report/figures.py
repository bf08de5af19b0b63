"""The sweep report's figures, from the table report.collect builds: heatmaps over the first two swept
keys, each metric against each swept key, and the risk curves (PNG and PDF).

Conventions: categorical keys keep the table's order; numeric keys (and metrics) get a log axis when
their positive values span more than two decades (keys: more than one); jobs that did not finish
(diverged, failed, corrupt, incomplete, interrupted) are marked on every figure and excluded from colour
and axis scales; titles give the number of seeds a mean is taken over.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, NamedTuple

import numpy as np
import pandas as pd

from ..rundir.contract import FINISHED
from ..rundir.contract import METRICS as METRICS_FILE
from .style import MARKS, colours, label, save_figure, spans_decades, subplots


class KeyAxis(NamedTuple):
    """A swept key as an axis: its values in table order, their plot positions, numeric or categorical."""

    key: str
    values: list
    positions: dict
    numeric: bool
    log: bool

    def apply(self, ax, which: str = "x") -> None:
        set_scale, set_ticks, set_label = ((ax.set_xscale, ax.set_xticks, ax.set_xlabel) if which == "x"
                                           else (ax.set_yscale, ax.set_yticks, ax.set_ylabel))
        if self.log:
            set_scale("log")
        set_ticks([self.positions[v] for v in self.values], [str(v) for v in self.values])
        if which == "x" and self.log:
            ax.xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())
        set_label(self.key)


def key_axis(df: pd.DataFrame, key: str) -> KeyAxis:
    values = list(dict.fromkeys(df[f"sweep.{key}"].dropna().tolist()))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        values = sorted(values)
        log = spans_decades(values, 1)
        return KeyAxis(key, values, {v: v for v in values}, True, log)
    return KeyAxis(key, values, {v: i for i, v in enumerate(values)}, False, False)


def seeds_per_point(df: pd.DataFrame, keys: List[str]) -> int:
    """How many jobs (seeds) share one combination of the swept keys, at most."""
    cols = [f"sweep.{k}" for k in keys if f"sweep.{k}" in df]
    return int(df.groupby(cols, dropna=False).size().max()) if cols else len(df)


def _seed_note(n: int) -> str:
    return "1 seed" if n == 1 else f"mean over {n} seeds"


def _mark_unfinished(ax, bad: pd.DataFrame, xaxis: KeyAxis, yaxis=None) -> None:
    """Unfinished jobs at their x (and y, on heatmaps) position, on the bottom edge of line plots."""
    import matplotlib.transforms as mtransforms

    shown = set()
    for row, (status, group) in enumerate(bad.groupby("status")):
        marker, colour, name = MARKS.get(status, ("o", "0.55", status))
        placed = group[f"sweep.{xaxis.key}"].isin(list(xaxis.positions))
        if yaxis is not None:
            placed &= group[f"sweep.{yaxis.key}"].isin(list(yaxis.positions))
        if not placed.all():  # a job whose configuration is unreadable has no position: listed only
            ax.plot([], [], marker, color=colour, linestyle="none", label=f"{name} (unplaced: {int((~placed).sum())})")
        group = group[placed]
        xs = [xaxis.positions[v] for v in group[f"sweep.{xaxis.key}"]]
        if yaxis is None:
            trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            ys, kw = [0.03 + 0.05 * row] * len(xs), {"transform": trans, "clip_on": False}  # a row per status
        else:
            ys, kw = [yaxis.positions[v] for v in group[f"sweep.{yaxis.key}"]], {}
        ax.scatter(xs, ys, marker=marker, s=70, color=colour, zorder=5, label=None if name in shown else name,
                   edgecolors="white" if marker != "X" else None, **kw)
        shown.add(name)


def _split(df: pd.DataFrame, metric: str):
    ok = df[df["status"].isin(FINISHED)].copy()
    ok["value"] = pd.to_numeric(ok[metric], errors="coerce") if metric in ok else np.nan
    return ok, df[~df["status"].isin(FINISHED)]


def heatmap(df: pd.DataFrame, ya: KeyAxis, xa: KeyAxis, metric: str, seeds: int):
    """Mean of `metric` over finished seeds per (ya, xa) cell; unfinished jobs marked in their cell."""
    from matplotlib.colors import LogNorm, Normalize

    ok, bad = _split(df, metric)
    table = ok.groupby([f"sweep.{ya.key}", f"sweep.{xa.key}"])["value"].mean().unstack()
    grid = np.full((len(ya.values), len(xa.values)), np.nan)
    for i, a in enumerate(ya.values):
        for j, b in enumerate(xa.values):
            if a in table.index and b in table.columns:
                grid[i, j] = table.loc[a, b]
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(finite.min(), finite.max()) if spans_decades(finite, 2) else \
        Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
    fig, ax = subplots(figsize=(6.4, 4.8))
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis", norm=norm)
    cell = lambda axis: KeyAxis(axis.key, axis.values, {v: i for i, v in enumerate(axis.values)}, False, False)
    cx, cy = cell(xa), cell(ya)
    cx.apply(ax, "x"), cy.apply(ax, "y")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="w", fontsize=8)
    _mark_unfinished(ax, bad, cx, cy)
    fig.colorbar(im, ax=ax, label=label(metric))
    ax.set_title(f"{label(metric)} ({_seed_note(seeds)})", fontsize=10)
    if len(bad):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.25, 1))
    return fig


def metric_lines(df: pd.DataFrame, xa: KeyAxis, group: KeyAxis, metric: str, seeds: int):
    """`metric` against one key, a line per value of another, a +-1 std band when seeds > 1."""

    ok, bad = _split(df, metric)
    fig, ax = subplots(figsize=(6.4, 4.4))
    groups = [(v, ok[ok[f"sweep.{group.key}"] == v]) for v in group.values] if group else [(None, ok)]
    cmap = colours("viridis", max(len(groups), 2))
    for i, (value, g) in enumerate(groups):
        stats = g.groupby(f"sweep.{xa.key}")["value"].agg(["mean", "std", "count"])
        stats = stats.reindex([v for v in xa.values if v in stats.index]).dropna(subset=["mean"])
        x = [xa.positions[v] for v in stats.index]
        # categories are not ordered quantities: points (and error bars), no joining line
        ax.plot(x, stats["mean"], marker="o", linestyle="-" if xa.numeric else "none", color=cmap(i),
                label=None if group is None else f"{group.key}={value}")
        if seeds > 1:
            sd = stats["std"].fillna(0.0)
            if xa.numeric:
                ax.fill_between(x, stats["mean"] - sd, stats["mean"] + sd, color=cmap(i), alpha=0.2)
            else:
                ax.errorbar(x, stats["mean"], yerr=sd, fmt="none", color=cmap(i), capsize=3)
    xa.apply(ax, "x")
    if spans_decades(ok["value"], 2):
        ax.set_yscale("log")
    _mark_unfinished(ax, bad, xa)
    ax.set_ylabel(label(metric))
    band = (", band: +-1 std" if xa.numeric else ", bars: +-1 std") if seeds > 1 else ""
    ax.set_title(f"{label(metric)} against {xa.key} ({_seed_note(seeds)}{band})", fontsize=10)
    if group is not None or len(bad):
        ax.legend(fontsize=7)
    return fig


def explaining_key(df: pd.DataFrame, keys: List[str]):
    """The swept key whose values explain most of the spread of log final risk (between-group variance)."""
    ok = df[df["status"].isin(FINISHED)]
    if "risk_train" not in ok or not keys:
        return keys[0] if keys else None
    y = np.log10(pd.to_numeric(ok["risk_train"], errors="coerce").clip(lower=1e-300))
    scores = {k: y.groupby(ok[f"sweep.{k}"]).transform("mean").var() for k in keys}
    return max(keys, key=lambda k: -1 if math.isnan(scores[k]) else scores[k])


def risk_curves(df: pd.DataFrame, key: KeyAxis, read):
    """Training risk over flow time, coloured by `key`; unfinished jobs dotted grey, outside the y range."""

    fig, ax = subplots(figsize=(6.8, 4.4))
    cmap = colours("viridis", max(len(key.values), 2))
    colour = {v: cmap(i) for i, v in enumerate(key.values)}
    finished, lo, hi = set(), [], []
    for _, r in df.iterrows():
        curve = read(r["path"], METRICS_FILE)
        curve = None if curve is None else curve[["flow_time", "risk_train"]].dropna()
        if curve is None or curve.empty:
            if r["status"] not in FINISHED:  # no curve to draw: a legend entry still marks it
                marker, c, name = MARKS.get(r["status"], ("o", "0.55", r["status"]))
                ax.plot([], [], marker, color=c, linestyle="none", label=None if name in finished else name)
                finished.add(name)
            continue
        if r["status"] in FINISHED:
            ax.plot(curve["flow_time"], curve["risk_train"], color=colour[r[f"sweep.{key.key}"]], alpha=0.8)
            positive = curve["risk_train"][curve["risk_train"] > 0]
            lo.append(positive.min()), hi.append(positive.max())
        else:
            marker, c, name = MARKS.get(r["status"], ("o", "0.55", r["status"]))
            ax.plot(curve["flow_time"], curve["risk_train"], ":", color="0.6", label=None if name in finished else name)
            ax.plot(curve["flow_time"].iloc[-1:], curve["risk_train"].iloc[-1:], marker, color=c)
            finished.add(name)
    ax.set_yscale("log")
    if lo:
        ax.set_ylim(min(lo) / 2, max(hi) * 2)
    for v in key.values:
        ax.plot([], [], color=colour[v], label=f"{key.key}={v}")
    ax.set_xlabel("flow time t")
    ax.set_ylabel(label("risk_train"))
    ax.legend(fontsize=7)
    ax.set_title(f"training risk, coloured by {key.key} (the key that explains most of its spread)", fontsize=9)
    return fig


def build_figures(df: pd.DataFrame, keys: List[str], metrics: List[str], read) -> Dict[str, object]:
    """name -> matplotlib Figure, for every figure of the report (not saved). `read(job path, file name)`
    returns a run's table (metrics.csv, depths.csv) or None."""
    keys = [k for k in keys if k != "seed" and f"sweep.{k}" in df]
    metrics = [m for m in metrics if m in df]
    axes = {k: key_axis(df, k) for k in keys}
    seeds = seeds_per_point(df, keys)
    figs = {}
    if len(keys) >= 2:
        a, b = keys[0], keys[1]
        for m in metrics:
            figs[f"heatmap_{m}_{a}_vs_{b}"] = heatmap(df, axes[a], axes[b], m, seeds)
    for k in keys:
        other = next((axes[o] for o in keys if o != k), None)
        for m in metrics:
            figs[f"{m}_vs_{k}"] = metric_lines(df, axes[k], other, m, seeds)
    if keys:
        k = explaining_key(df, keys)
        figs[f"risk_curves_by_{k}"] = risk_curves(df, axes[k], read)
    if "optim.geometry" in keys:
        from .geometry_figures import geometry_figures

        figs.update(geometry_figures(df, read))
    return figs


def sweep_figures(df: pd.DataFrame, keys: List[str], out: Path, metrics: List[str]) -> List[Path]:
    """Render and save every figure as PNG and PDF in `out`; returns the paths written."""

    from ..rundir.contract import RunDirError, read_table

    def read(path, name):
        try:
            return read_table(Path(path), name)
        except RunDirError:
            return None

    written = []
    for name, fig in build_figures(df, keys, metrics, read).items():
        written += save_figure(fig, Path(out) / name, ("png", "pdf"))
    return written
