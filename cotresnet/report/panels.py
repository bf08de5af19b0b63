"""The sweep report's panels: one metric against a swept key (with the theory's references beside it) or over
the grid of two keys, and the swept keys as axes. The pages that hold them are figures.py's."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import pandas as pd

from ..rundir.contract import FINISHED
from .style import MARKERS, MARKS, SYMBOLS, label, log_axis, palette, small_numbers, spans_decades

# the network's and the data's sizes: one of them that is not swept yet follows the swept key one to one (M = 2L²
# in mean_field_limit) is named under the ticks, or the axis would hide half of what changed
SHAPE_KEYS = ("model.L", "model.M", "model.d", "data.n_train")


class KeyAxis(NamedTuple):
    """A swept key as an axis: its values in table order, their plot positions, numeric or categorical."""

    key: str
    values: list
    positions: dict
    numeric: bool
    log: bool
    tied: Optional[tuple] = None  # (a shape key, {value: its value}) that follows this key one to one

    def apply(self, ax, which: str = "x") -> None:
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        axis = ax.xaxis if which == "x" else ax.yaxis
        if self.log:
            (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        ticks = [self.positions[v] for v in self.values]
        axis.set_major_locator(FixedLocator(ticks))
        texts = [f"{v:g}" if self.numeric else str(v) for v in self.values]
        if self.tied:
            other, follows = self.tied
            texts = [f"{t}\n{SYMBOLS[other]} = {follows[v]:g}" for t, v in zip(texts, self.values)]
        axis.set_major_formatter(FixedFormatter(texts))
        axis.set_minor_locator(NullLocator())
        (ax.set_xlabel if which == "x" else ax.set_ylabel)(label(self.key) + (
            f" (and {SYMBOLS[self.tied[0]]}, tied to it)" if self.tied else ""))
        if self.numeric and len(ticks) > 1:
            lo, hi = min(ticks), max(ticks)
            pad = (hi / lo) ** 0.06 if self.log else 0.06 * (hi - lo)
            (ax.set_xlim if which == "x" else ax.set_ylim)(*((lo / pad, hi * pad) if self.log else (lo - pad, hi + pad)))
        elif not self.numeric:
            (ax.set_xlim if which == "x" else ax.set_ylim)(-0.5, len(ticks) - 0.5)


COMBINED = "+"  # the key of a column that combines several swept keys: its values say which


def group_text(key: str, value) -> str:
    """A line's legend text: `M = 32`, or a combination's own text."""
    return str(value) if key == COMBINED else f"{label(key)} = {value}"


def combine_keys(df: pd.DataFrame, keys) -> pd.DataFrame:
    """df with a COMBINED column: one value per combination of `keys` (`geometry = cot, κ = 10`)."""
    df = df.copy()
    df[f"sweep.{COMBINED}"] = [", ".join(f"{label(k)} = {v:g}" if isinstance(v, float) else f"{label(k)} = {v}"
                                         for k, v in zip(keys, row))
                               for row in df[[f"sweep.{k}" for k in keys]].itertuples(index=False)]
    return df


def key_axis(df: pd.DataFrame, key: str) -> KeyAxis:
    values = list(dict.fromkeys(df[f"sweep.{key}"].dropna().tolist()))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        values = sorted(values)
        return KeyAxis(key, values, {v: v for v in values}, True, spans_decades(values, 1) or _geometric(values),
                       tied_key(df, key, values))
    return KeyAxis(key, values, {v: i for i, v in enumerate(values)}, False, False)


def tied_key(df: pd.DataFrame, key: str, values: list) -> Optional[tuple]:
    """(shape key, {value of `key`: its value}) for a SHAPE_KEYS size that takes one value per value of `key`
    and a different one for each, where there are at least two; None otherwise."""
    for other in SHAPE_KEYS:
        column = f"cfg.{other}"
        if other == key or column not in df or len(values) < 2:
            continue
        pairs = df[[f"sweep.{key}", column]].dropna().drop_duplicates()
        if len(pairs) == len(values) and pairs[column].nunique() == len(values):
            return other, dict(zip(pairs[f"sweep.{key}"], pd.to_numeric(pairs[column])))
    return None


def _geometric(values) -> bool:
    """Three or more positive values in a constant ratio (4, 8, 16): evenly spaced on a log axis."""
    v = np.asarray(values, dtype=float)
    if len(v) < 3 or (v <= 0).any():
        return False
    ratios = v[1:] / v[:-1]
    return bool(ratios.min() > 1.4 and ratios.max() / ratios.min() < 1.05)


def _values(df: pd.DataFrame, metric: str) -> pd.Series:
    return pd.to_numeric(df[metric], errors="coerce") if metric in df else pd.Series(np.nan, index=df.index)


def computed(df: pd.DataFrame, metric: str) -> bool:
    """Whether any finished run has a finite value of the metric."""
    ok = df[df["status"].isin(FINISHED)]
    return bool(np.isfinite(_values(ok, metric)).any())


def _mark_unfinished(ax, bad: pd.DataFrame, xaxis: KeyAxis, yaxis: Optional[KeyAxis] = None) -> None:
    """Unfinished runs at their x (and y, on heatmaps) position; on line panels in a row along the floor."""
    import matplotlib.transforms as mtransforms

    for row, (status, group) in enumerate(bad.groupby("status")):
        marker, colour, name = MARKS.get(status, ("o", "0.55", status))
        placed = group[f"sweep.{xaxis.key}"].isin(list(xaxis.positions))
        if yaxis is not None:
            placed &= group[f"sweep.{yaxis.key}"].isin(list(yaxis.positions))
        group = group[placed]
        xs = [xaxis.positions[v] for v in group[f"sweep.{xaxis.key}"]]
        if yaxis is None:
            trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            ys, kw = [0.04 + 0.06 * row] * len(xs), {"transform": trans, "clip_on": False}
        else:
            ys, kw = [yaxis.positions[v] for v in group[f"sweep.{yaxis.key}"]], {}
        text = f"{name} ({len(group) + int((~placed).sum())} runs)"
        ax.scatter(xs, ys, marker=marker, s=40, color=colour, zorder=5, label=text,
                   edgecolors="white" if marker != "X" else None, linewidths=0.5, **kw)


def _split(df: pd.DataFrame, metric: str):
    ok = df[df["status"].isin(FINISHED)].copy()
    ok["value"] = _values(ok, metric)
    return ok, df[~df["status"].isin(FINISHED)]


def _fit_slope(ax, ok: pd.DataFrame, xa: KeyAxis, groups, colours) -> None:
    """A power law through the finished runs with one slope and an intercept per line (log-log least squares),
    each line's fit dashed in its colour, the slope's 95 % t-interval in the legend."""
    from scipy import stats

    sub = ok[(ok["value"] > 0) & np.isfinite(ok["value"])]
    x = np.log(sub[f"sweep.{xa.key}"].astype(float).to_numpy())
    member = [sub.index.isin(g.index) for _, g in groups]
    used = [i for i, m in enumerate(member) if len(np.unique(x[m])) >= 2]
    dof = len(sub) - 1 - len(used)
    if not used or dof < 1 or len(np.unique(x)) < 3:
        return
    rows = np.concatenate([np.flatnonzero(member[i]) for i in used])
    X = np.column_stack([x[rows]] + [member[i][rows].astype(float) for i in used])
    y = np.log(sub["value"].to_numpy()[rows])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    cov = resid @ resid / dof * np.linalg.pinv(X.T @ X)
    half = stats.t.ppf(0.975, dof) * math.sqrt(max(cov[0, 0], 0.0))
    for j, i in enumerate(used):
        xs = np.exp(np.linspace(x[member[i]].min(), x[member[i]].max(), 20))
        ax.plot(xs, np.exp(coef[1 + j]) * xs ** coef[0], "--", color=colours[i], lw=0.8, alpha=0.9)
    ax.plot([], [], "--", color="0.3", lw=0.8,
            label=f"power-law fit: slope {coef[0]:.2f} [{coef[0] - half:.2f}, {coef[0] + half:.2f}] (95 %)")


def _references(ax, ok: pd.DataFrame, xa: KeyAxis, groups, colours, metric: str) -> None:
    """What the theory says beside the measured metric (module doc)."""
    ref = {"min_pl_ratio": ("c0", "certified rate c₀ (G/ℒ ≥ c₀)"),
           "log10_risk_ratio": ("guaranteed_factor", "certified: log₁₀ exp(−c₀t)")}.get(metric)
    if ref is not None and ref[0] in ok:
        _reference_lines(ax, ok, xa, groups, colours, metric, *ref)
    if metric == "log10_risk_ratio" and "cfg.trainer.converge_ratio" in ok and (ok["status"] == "converged").any():
        ax.axhline(math.log10(float(ok["cfg.trainer.converge_ratio"].iloc[0])), color="0.2", lw=0.7, ls="-.",
                   label="converge_ratio: a converged run stopped here")
    if metric == "path_over_radius":
        ax.axhline(1.0, color="tab:red", lw=0.8, ls=":", label="certified radius R₀")
    if metric.startswith("lambda_min_feature") and xa.key == "model.M/data.n_train":
        ax.axvline(1.0, color="0.4", lw=0.8, ls=":", label="M = N: below it each feature kernel has rank ≤ M < N")
        ok = ok[ok[f"sweep.{xa.key}"] > 1.0]  # the power law is the regime above the rank threshold
        groups = [(v, g[g.index.isin(ok.index)]) for v, g in groups]
    if xa.numeric and xa.log and ax.get_yscale() == "log":
        _fit_slope(ax, ok, xa, groups, colours)


def _reference_lines(ax, ok: pd.DataFrame, xa: KeyAxis, groups, colours, metric: str, col: str, text: str) -> None:
    """A reference per line (one grey line when every line has the same), drawn where it lies within the
    measured values' range; off that range it would squash them, so the legend gives its values instead."""
    values = pd.to_numeric(ok[col], errors="coerce")
    values = np.log10(values.where(values > 0)) if metric == "log10_risk_ratio" else values
    lines = [values.loc[g.index].groupby(g[f"sweep.{xa.key}"]).mean().dropna() for _, g in groups]
    lines = [(v, colours[i]) for i, v in enumerate(lines) if len(v)]
    if not lines:
        return
    if all(len(v) == len(lines[0][0]) and np.allclose(v.to_numpy(), lines[0][0].to_numpy(), rtol=1e-6, atol=0)
           for v, _ in lines):
        lines = [(lines[0][0], "0.35")]
    ref = np.concatenate([v.to_numpy() for v, _ in lines])
    data = ok["value"][np.isfinite(ok["value"]) & ((ok["value"] > 0) if ax.get_yscale() == "log" else True)]
    lo, hi = (data.min(), data.max()) if len(data) else (ref.min(), ref.max())
    margin = (hi / lo) ** 0.5 if ax.get_yscale() == "log" and lo > 0 else 0.25 * (hi - lo)
    inside = (ref >= (lo / margin if ax.get_yscale() == "log" else lo - margin)) & \
             (ref <= (hi * margin if ax.get_yscale() == "log" else hi + margin))
    if not inside.all():
        where = "below" if ref.max() < lo else "above" if ref.min() > hi else "beside"
        span = f"{ref.min():.2g}" if np.isclose(ref.min(), ref.max()) else f"{ref.min():.2g} to {ref.max():.2g}"
        ax.plot([], [], ls=":", marker="_", color="0.35", label=f"{text} = {span}: {where} the axis")
        return
    for i, (v, colour) in enumerate(lines):
        ax.plot([xa.positions[x] for x in v.index], v, ls=":" if xa.numeric else "none", marker="_", ms=9,
                color=colour, lw=1, label=text if i == 0 else None)


def metric_panel(ax, df: pd.DataFrame, xa: KeyAxis, group: Optional[KeyAxis], metric: str, seeds: int) -> None:
    """`metric` against one key, a line per value of another: means (markers, ± sd when seeds > 1), every run a
    faint dot (converged ones starred), exact zeros on the floor, the theory's references."""
    ok, bad = _split(df, metric)
    groups = [(v, ok[ok[f"sweep.{group.key}"] == v]) for v in group.values] if group else [(None, ok)]
    colours = palette(len(groups))
    finite = ok["value"][np.isfinite(ok["value"])]
    # a ratio to its limit (path / R₀ against 1) is read on a log axis; else one when values span two decades
    log = (finite >= 0).all() and (spans_decades(finite[finite > 0], 2) or (metric == "path_over_radius" and
                                                                           (finite > 0).any()))
    for i, (value, g) in enumerate(groups):
        g = g[np.isfinite(g["value"])]
        shown = g[g["value"] > 0] if log else g
        # on a log axis the geometric mean and sd (an arithmetic sd would reach below zero)
        v = np.log10(shown["value"]) if log else shown["value"]
        stats = v.groupby(shown[f"sweep.{xa.key}"]).agg(["mean", "std"])
        stats = stats.reindex([v for v in xa.values if v in stats.index])
        x = [xa.positions[v] for v in stats.index]
        text = None if group is None else group_text(group.key, value)
        mean, sd = stats["mean"], stats["std"].fillna(0.0)
        yerr = None if seeds <= 1 else [10**mean - 10**(mean - sd), 10**(mean + sd) - 10**mean] if log else sd
        ax.errorbar(x, 10**mean if log else mean, yerr=yerr,
                    marker=MARKERS[i % len(MARKERS)], ls="-" if xa.numeric else "none", color=colours[i], capsize=2,
                    ms=4, lw=1.0, label=text)
        for status, m, size, alpha, z in (("max_steps", "o", 8, 0.45, 2), ("converged", "*", 60, 0.95, 6)):
            runs = shown[shown["status"] == status]
            ax.scatter([xa.positions[v] for v in runs[f"sweep.{xa.key}"]], runs["value"], marker=m, s=size,
                       color=colours[i], alpha=alpha, edgecolors="0.15" if m == "*" else "none", linewidths=0.4,
                       zorder=z)
    if log:
        log_axis(ax)
        zeros = ok[ok["value"] == 0]
        if len(zeros):
            import matplotlib.transforms as mtransforms

            trans = mtransforms.blended_transform_factory(ax.transData, ax.transAxes)
            ax.scatter([xa.positions[v] for v in zeros[f"sweep.{xa.key}"]], [0.0] * len(zeros), marker="v",
                       color="0.3", s=25, transform=trans, clip_on=False, zorder=4,
                       label=f"exactly 0 ({len(zeros)} runs): below the log axis")
    if (ok["status"] == "converged").any():
        ax.scatter([], [], marker="*", s=60, color="0.6", edgecolors="0.15", linewidths=0.4, label="a converged run")
    _references(ax, ok, xa, groups, colours, metric)
    xa.apply(ax, "x")
    _mark_unfinished(ax, bad, xa)
    ax.set_ylabel(label(metric))
    if not log and len(finite) and not (1e-2 <= finite.abs().max() < 1e4):
        small_numbers(ax, finite)


def heatmap_panel(fig, ax, df: pd.DataFrame, ya: KeyAxis, xa: KeyAxis, metric: str) -> None:
    """Mean of `metric` over finished seeds per (ya, xa) cell (its value written in; * where every seed
    converged); unfinished runs marked in their cell."""
    from matplotlib.colors import LogNorm, Normalize

    ok, bad = _split(df, metric)
    cells = ok.groupby([f"sweep.{ya.key}", f"sweep.{xa.key}"])
    table, converged = cells["value"].mean().unstack(), cells["status"].agg(lambda s: (s == "converged").all()).unstack()
    grid = np.full((len(ya.values), len(xa.values)), np.nan)
    star = np.zeros_like(grid, dtype=bool)
    for i, a in enumerate(ya.values):
        for j, b in enumerate(xa.values):
            if a in table.index and b in table.columns:
                grid[i, j], star[i, j] = table.loc[a, b], bool(converged.loc[a, b])
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(finite.min(), finite.max()) if spans_decades(finite, 2) else \
        Normalize(*(finite.min(), finite.max()) if finite.size else (0, 1))
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap="viridis", norm=norm)
    cell = lambda axis: KeyAxis(axis.key, axis.values, {v: i for i, v in enumerate(axis.values)}, False, False)  # noqa: E731
    cx, cy = cell(xa), cell(ya)
    cx.apply(ax, "x"), cy.apply(ax, "y")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            bright = norm(v) > 0.6
            ax.text(j, i, f"{v:.3g}" + ("*" if star[i, j] else ""), ha="center", va="center", fontsize=6.5,
                    color="k" if bright else "w")
    _mark_unfinished(ax, bad, cx, cy)
    fig.colorbar(im, ax=ax, label=label(metric), fraction=0.05, pad=0.03)
