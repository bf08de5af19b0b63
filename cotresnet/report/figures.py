"""The sweep report's figures, from the table sweep.collect builds: a few pages, each with a panel per metric.

    metrics.png      each metric against the primary swept key (a line per value of the second), with the
                     theory's references: the certified rate c₀ under min G/ℒ, the certified decay e^{−c₀t} under
                     the risk ratio, the certified radius under path / R₀, a fitted slope with its interval
    heatmaps.png     (two swept keys) each metric over the grid of the first two keys
    risk_curves.png  training risk over flow time, coloured by the key that explains most of its spread, with
                     the certified decay ℒ(0) e^{−c₀t} of each colour
    geometry.png     (optim.geometry swept) the two flows side by side (geometry_figures)

Conventions: labels in the paper's symbols (style.LABELS); categorical keys keep the table's order, numeric keys
get a log axis when they span more than a decade, with a tick at each swept value; a metric gets a log axis when
its positive values span more than two decades, and its exact zeros (a rank-deficient kernel) are marked on the
axis's floor; runs that did not finish (diverged, failed, corrupt, incomplete, interrupted) are marked on every
figure and kept out of the scales; converged runs (stopped when their risk ratio reached the threshold) are
starred; a metric that no run computed gets no panel, and a warning instead.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ..rundir.contract import FINISHED
from ..rundir.contract import METRICS as METRICS_FILE
from .panels import COMBINED, KeyAxis, combine_keys, computed, group_text, heatmap_panel, key_axis, metric_panel
from .style import DOUBLE, MARKS, SINGLE, label, log_axis, palette, save_figure, subplots


def seeds_per_point(df: pd.DataFrame, keys: List[str]) -> int:
    """How many runs (seeds) share one combination of the swept keys, at most."""
    cols = [f"sweep.{k}" for k in keys if f"sweep.{k}" in df]
    return int(df.groupby(cols, dropna=False).size().max()) if cols else len(df)


def _seed_note(n: int) -> str:
    return "1 seed" if n == 1 else f"mean ± sd over {n} seeds"


def explaining_key(df: pd.DataFrame, keys: List[str]):
    """The swept key whose values explain most of the spread of log final risk (between-group variance)."""
    ok = df[df["status"].isin(FINISHED)]
    if "risk_train" not in ok or not keys:
        return keys[0] if keys else None
    y = np.log10(pd.to_numeric(ok["risk_train"], errors="coerce").clip(lower=1e-300))
    scores = {k: y.groupby(ok[f"sweep.{k}"]).transform("mean").var() for k in keys}
    return max(keys, key=lambda k: -1 if math.isnan(scores[k]) else scores[k])


def risk_curves(df: pd.DataFrame, key: KeyAxis, read):
    """Training risk over flow time, coloured by `key`, with the certified decay ℒ(0)e^{−c₀t} of each colour
    (dashed, runs with a certificate); unfinished runs dotted grey, outside the y range."""
    fig, ax = subplots(width=DOUBLE, height=3.0)
    colours = palette(len(key.values))
    colour = {v: colours[i] for i, v in enumerate(key.values)}
    lo, hi, t_end, marked = [], [], 0.0, set()
    for _, r in df.iterrows():
        curve = read(r["path"], METRICS_FILE)
        curve = None if curve is None else curve[["flow_time", "risk_train"]].dropna()
        marker, c, name = MARKS.get(r["status"], ("o", "0.55", r["status"]))
        if r["status"] not in FINISHED:
            if curve is not None and not curve.empty:
                ax.plot(curve["flow_time"], curve["risk_train"], ":", color="0.6", lw=0.8)
                ax.plot(curve["flow_time"].iloc[-1:], curve["risk_train"].iloc[-1:], marker, color=c)
            if name not in marked:
                ax.plot([], [], marker, color=c, ls="none", label=f"{name} (dotted; off the scale)")
                marked.add(name)
            continue
        if curve is None or curve.empty:
            continue
        ax.plot(curve["flow_time"], curve["risk_train"], color=colour[r[f"sweep.{key.key}"]], alpha=0.75, lw=0.9)
        if r["status"] == "converged":  # the curve ends because the run met its rule, not for want of steps
            ax.plot(curve["flow_time"].iloc[-1:], curve["risk_train"].iloc[-1:], "*", ms=7, mec="0.15", mew=0.4,
                    color=colour[r[f"sweep.{key.key}"]], zorder=5)
        positive = curve["risk_train"][curve["risk_train"] > 0]
        lo.append(positive.min()), hi.append(positive.max())
        t_end = max(t_end, float(curve["flow_time"].max()))
    ok, certified = df[df["status"].isin(FINISHED)], False
    for v in key.values:
        mine = ok[ok[f"sweep.{key.key}"] == v]
        c0, r0 = pd.to_numeric(mine.get("c0"), errors="coerce").mean(), pd.to_numeric(mine.get("risk_init")).mean()
        if np.isfinite(c0) and np.isfinite(r0) and t_end > 0:
            t = np.linspace(0.0, t_end, 60)
            ax.plot(t, r0 * np.exp(-c0 * t), "--", color=colour[v], lw=0.9)
            certified = True
        ax.plot([], [], color=colour[v], label=f"{label(key.key)} = {v:.4g}" if key.numeric else f"{label(key.key)} = {v}")
    if (ok["status"] == "converged").any():
        ax.plot([], [], "*", ms=7, mec="0.15", mew=0.4, color="0.6", ls="none", label="converged: the run stopped")
    if certified:
        ax.plot([], [], "--", color="0.3", lw=0.9, label="certified: ℒ(0)·exp(−c₀t), mean c₀ of the colour")
    log_axis(ax)
    if lo:  # the finished runs set both ranges: an unfinished one stops wherever it stopped
        ax.set_ylim(min(lo) / 2, max(hi) * 2)
        ax.set_xlim(0.0, t_end * 1.02)
    ax.set_xlabel(label("flow_time"))
    ax.set_ylabel(label("risk_train"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5)
    fig.subplots_adjust(left=0.1, right=0.62, bottom=0.16, top=0.95)
    return fig


def _grid(n: int):
    """(figure, axes) for n panels: one column for 1, two beyond."""
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig, axes = subplots(rows, cols, width=SINGLE * 1.8 if cols == 1 else DOUBLE, height=3.0 * rows,
                         squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _finish_panels(fig, axes, rows: int, shared: set, wspace: float = 0.32, right: float = 0.97) -> None:
    """One legend for what every panel shares (the lines' values, run statuses) to the right of the figure, and
    under each panel its own references (bounds, fits), never over the data."""
    handles, seen = [], set()
    for ax in axes:
        for h, text in zip(*ax.get_legend_handles_labels()):
            if (text in shared or text.split(" (")[0] in shared) and text not in seen:
                handles.append((h, text))
                seen.add(text)
        own = [(h, t) for h, t in zip(*ax.get_legend_handles_labels()) if t not in seen]
        if own:
            ax.legend(*zip(*own), loc="upper center", bbox_to_anchor=(0.5, -0.32), fontsize=6, ncol=1,
                      borderaxespad=0.0)
    height = fig.get_figheight()
    below = max((len(ax.get_legend().get_texts()) for ax in axes if ax.get_legend()), default=0)
    ncol = min(len(handles), 4 if max((len(t) for _, t in handles), default=0) < 28 else 2)
    if handles:
        fig.legend(*zip(*handles), loc="upper center", bbox_to_anchor=(0.55, 1 - 0.22 / height), fontsize=6.5,
                   ncol=ncol, columnspacing=1.2, handletextpad=0.4)
    rows_in = height / rows  # inches per row of panels; the legends under them need room
    legend_rows = math.ceil(len(handles) / max(ncol, 1))
    fig.subplots_adjust(left=0.09, right=right, wspace=wspace, hspace=(0.8 + 0.16 * below) / (rows_in - 1.2),
                        bottom=(0.6 + 0.16 * below) / height,
                        top=1 - (0.6 + 0.15 * legend_rows if handles else 0.55) / height)


def derived_axis(df: pd.DataFrame, x: Optional[str]) -> Tuple[pd.DataFrame, Optional[str]]:
    """report.x = `a/b` (e.g. model.M/data.n_train): the swept ratio of two configuration values as a key."""
    if not x or "/" not in x:
        return df, None
    a, b = x.split("/", 1)
    cols = [f"sweep.{a}" if f"sweep.{a}" in df else f"cfg.{a}", f"sweep.{b}" if f"sweep.{b}" in df else f"cfg.{b}"]
    if not all(c in df for c in cols):
        return df, None
    df = df.copy()
    df[f"sweep.{x}"] = pd.to_numeric(df[cols[0]], errors="coerce") / pd.to_numeric(df[cols[1]], errors="coerce")
    return df, x


def build_figures(df: pd.DataFrame, keys: List[str], metrics: List[str], read,
                  x: Optional[str] = None) -> Tuple[Dict[str, object], List[str]]:
    """({name: matplotlib Figure}, warnings) for the report (not saved). `read(run path, file name)` returns a
    run's table (metrics.csv, depths.csv) or None; `x`: report.x, a ratio of two keys as the primary axis."""
    keys = [k for k in keys if k != "seed" and f"sweep.{k}" in df]
    warnings = [f"{m}: computed in no finished run, not drawn" for m in metrics if not computed(df, m)]
    metrics = [m for m in metrics if computed(df, m)]
    df, derived = derived_axis(df, x)
    if derived:
        keys = [derived] + [k for k in keys if k not in x.split("/")]
    axes = {k: key_axis(df, k) for k in keys}
    seeds = seeds_per_point(df, keys)
    figs = {}
    if keys and metrics:
        primary = max(keys, key=lambda k: (axes[k].numeric, len(axes[k].values))) if not derived else derived
        rest = [k for k in keys if k != primary]
        lines = df if len(rest) < 2 else combine_keys(df, rest)  # a line per combination: none pooled
        other = key_axis(lines, COMBINED) if len(rest) > 1 else next((axes[k] for k in rest), None)
        fig, panels = _grid(len(metrics))
        for ax, m in zip(panels, metrics):
            metric_panel(ax, lines, axes[primary], other, m, seeds)
        fig.suptitle(f"{len(df)} runs, {_seed_note(seeds)} per point", fontsize=8, x=0.01, ha="left")
        shared = {group_text(other.key, v) for v in other.values} if other else set()
        shared |= {"a converged run"} | {m[2] for m in MARKS.values()}
        _finish_panels(fig, panels, math.ceil(len(metrics) / (1 if len(metrics) == 1 else 2)), shared)
        figs["metrics"] = fig
        if len(keys) >= 2:
            fig, panels = _grid(len(metrics))
            for ax, m in zip(panels, metrics):
                heatmap_panel(fig, ax, df, axes[keys[0]], axes[keys[1]], m)
                ax.set_title(label(m))
            pooled = f"; pooled over {', '.join(label(k) for k in keys[2:])}" if len(keys) > 2 else ""
            fig.suptitle(f"{_seed_note(seeds)} per cell{pooled}; * every seed converged", fontsize=8, x=0.01,
                         ha="left")
            _finish_panels(fig, panels, math.ceil(len(metrics) / (1 if len(metrics) == 1 else 2)),
                           {m[2] for m in MARKS.values()}, wspace=0.75, right=0.9)
            figs["heatmaps"] = fig
    if keys and "steps" in df and pd.to_numeric(df["steps"], errors="coerce").max() > 1:  # a curve needs steps
        figs["risk_curves"] = risk_curves(df, axes[explaining_key(df, keys)], read)
    if "optim.geometry" in keys:
        from .geometry_figures import geometry_figure

        figs["geometry"] = geometry_figure(df, read)
    return figs, warnings


def sweep_figures(df: pd.DataFrame, keys: List[str], out: Path, metrics: List[str], formats=("png",),
                  x: Optional[str] = None) -> Tuple[List[Path], List[str]]:
    """Render and save every figure in `out` in the formats asked for; returns (paths written, warnings)."""
    from ..rundir.contract import RunDirError, read_table
    from .style import styled

    def read(path, name):
        try:
            return read_table(Path(path), name)
        except RunDirError:
            return None

    @styled
    def draw():
        written = []
        figs, warnings = build_figures(df, keys, metrics, read, x)
        for name, fig in figs.items():
            written += save_figure(fig, Path(out) / name, formats, tight=False)
        return written, warnings

    return draw()
