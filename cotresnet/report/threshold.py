"""A threshold search's report: it reads the tables the search wrote (cotresnet.sweeps.threshold_tables) and
draws the boundary over the phase diagram, each combination's success fraction with its logistic fit, and
the scaling of the threshold with the other swept key.

    threshold_report(sweep_dir, out_dir) -> {"figures", "boundary", "brackets", "points", "outcomes",
                                             "scaling", "lines"}

Scaling: with one other swept key x of positive numbers (e.g. data.n_train = N) and at least three
converged combinations, log T = alpha log x + c is fitted by weighted least squares over the
estimates T (weights from their intervals, threshold_stats.power_law_fit), with a t-interval for
alpha at the search's level.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd

from ..sweeps.threshold_stats import power_law_fit
from ..sweeps.threshold_tables import BOUNDARY, SCALING, read_tables
from .style import save_figure, subplots


def _x_values(brackets: pd.DataFrame, keys: List[str]) -> Optional[pd.Series]:
    """The other swept key's value per combination when there is one key and every value is a
    positive number; else None (the figures then place combinations side by side)."""
    if len(keys) != 1:
        return None
    x = pd.to_numeric(brackets.combination.str.split("=", n=1).str[1], errors="coerce")
    return x if x.notna().all() and (x > 0).all() else None


def scaling_fit(boundary: pd.DataFrame, level: float) -> Optional[dict]:
    """power_law_fit of estimate against x over the resolved rows (an estimate inside its final bracket, with
    a finite interval: threshold_tables.bracket_table), or None when fewer than 3 are."""
    ok = boundary[boundary.resolved.astype(bool) & (boundary.estimate_hi > boundary.estimate_lo)]
    if "x" not in boundary or len(ok) < 3:
        return None
    fit = power_law_fit(ok.x, ok.estimate, intervals=ok[["estimate_lo", "estimate_hi"]], level=level)
    return dict(alpha=fit.alpha, alpha_lo=fit.alpha_lo, alpha_hi=fit.alpha_hi, c=fit.c, level=level,
                combinations=len(ok), weighted=fit.weighted)


def threshold_report(sweep_dir, out_dir) -> dict:
    """Write the boundary table, the scaling table and the figures into out_dir; returns the figure
    paths, the tables (DataFrames; scaling: a one-row DataFrame or None) and printable lines."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    search, brackets, points, outcomes = read_tables(sweep_dir)
    settings, key = search["settings"], search["key"]
    cols = ["combination", "status", "lo", "hi", "estimate", "estimate_lo", "estimate_hi", "resolved", "rounds", "jobs",
            "grid_jobs", "note"]
    boundary = brackets[cols].copy()
    x = _x_values(brackets, search["combination_keys"])
    if x is not None:
        boundary.insert(1, "x", x)
    out_dir.mkdir(parents=True, exist_ok=True)
    boundary.to_csv(out_dir / BOUNDARY, index=False)
    fit = scaling_fit(boundary, settings["level"])
    lines, scaling = _lines(key, boundary, len(outcomes)), None
    unresolved = int((~boundary.resolved.astype(bool)).sum())
    if fit is None and "x" in boundary:
        lines.append(f"  no scaling law: {len(boundary) - unresolved} resolved combination(s), 3 are needed "
                     f"({unresolved} unresolved: see their notes)")
    if fit is not None:
        xk = search["combination_keys"][0]
        scaling = pd.DataFrame([{"key": key, "x": xk, **fit}])
        scaling.to_csv(out_dir / SCALING, index=False)
        lines.append(f"  log {key}* = alpha log {xk} + c: alpha = {fit['alpha']:.3f} [{fit['alpha_lo']:.3f}, "
                     f"{fit['alpha_hi']:.3f}] ({fit['level']:.0%}), c = {fit['c']:.3f}, over the "
                     f"{fit['combinations']} resolved combinations" + (f" ({unresolved} left out)" if unresolved else ""))
    figures = [_phase_diagram(out_dir, search, boundary, points, fit), _fractions(out_dir, search, brackets, points)]
    return {"figures": figures, "boundary": boundary, "brackets": brackets, "points": points,
            "outcomes": outcomes, "scaling": scaling, "lines": lines}


def _lines(key: str, b: pd.DataFrame, runs: int) -> List[str]:
    """The search in a few lines: jobs (and runs: one per seed) against the grid, then each combination's
    bracket and estimate."""
    jobs, grid = int(b.jobs.sum()), int(b.grid_jobs.sum())
    per_job = f" ({runs} runs)" if runs != jobs else ""
    lines = [f"threshold search {key}: {len(b)} combination(s), {jobs} jobs{per_job} in {int(b.rounds.max())} "
             f"rounds; a grid of the same resolution: {grid} jobs ({jobs / grid:.2f})"]
    for r in b.itertuples():
        est = f"  {key}* = {r.estimate:.4g} [{r.estimate_lo:.4g}, {r.estimate_hi:.4g}]" if np.isfinite(r.estimate) else ""
        note = f"  ({r.note})" if isinstance(r.note, str) and r.note else ""
        lines.append(f"  {r.combination}: bracket [{r.lo:g}, {r.hi:g}] {r.status}, {r.rounds} rounds, {r.jobs} jobs"
                     f"{est}{note}")
    return lines


def _phase_diagram(out_dir: Path, search: dict, boundary: pd.DataFrame, points: pd.DataFrame, fit) -> Path:
    """Evaluated points (filled: success, cross: failure; colour: fraction of seeds), the final
    bracket per combination (grey bar), the estimate with its interval and the power-law fit."""
    numeric = "x" in boundary
    pos = dict(zip(boundary.combination, boundary.x if numeric else range(len(boundary))))
    fig, ax = subplots(figsize=(6.4, 4.8))
    px = points.combination.map(pos)
    for ok, marker in ((True, "o"), (False, "x")):
        sel = points.success == ok
        sc = ax.scatter(px[sel], points.value[sel], c=points.fraction[sel], cmap="RdYlGn", vmin=0, vmax=1,
                        marker=marker, s=36, label="success" if ok else "failure", zorder=3)
    fig.colorbar(sc, ax=ax, label="fraction of seeds that succeed")
    ax.vlines(boundary.combination.map(pos), boundary.lo, boundary.hi, colors="0.6", lw=6, alpha=0.6,
              label="final bracket", zorder=1)
    est = boundary[np.isfinite(boundary.estimate)]
    ax.errorbar(est.combination.map(pos), est.estimate, yerr=[est.estimate - est.estimate_lo, est.estimate_hi - est.estimate],
                fmt="D", color="k", ms=4, capsize=3, label="threshold estimate", zorder=4)
    if fit is not None:
        xs = np.geomspace(boundary.x.min(), boundary.x.max(), 50)
        ax.plot(xs, np.exp(fit["c"]) * xs ** fit["alpha"], "k--", lw=1,
                label=f"fit: alpha = {fit['alpha']:.2f} [{fit['alpha_lo']:.2f}, {fit['alpha_hi']:.2f}]")
    if numeric:
        ax.set_xscale("log")
        ax.set_xticks(sorted(boundary.x), [f"{v:g}" for v in sorted(boundary.x)])
        ax.minorticks_off()
        ax.margins(x=0.1)
        ax.set_xlabel(search["combination_keys"][0])
    else:
        ax.set_xticks(range(len(boundary)), boundary.combination, rotation=20, fontsize=8)
    if search["settings"]["log"]:
        ax.set_yscale("log")
    ax.set_ylabel(search["key"])
    ax.set_title(f"{search['key']} threshold: success {search['settings']['direction']} it", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, out_dir / "threshold_phase_diagram")[0]


def _fractions(out_dir: Path, search: dict, brackets: pd.DataFrame, points: pd.DataFrame) -> Path:
    """Per combination: the fraction of seeds that succeed at each evaluated value, the logistic
    curve P = sigmoid(slope (u - log T)) where it is identified, and the estimate's interval."""
    n = len(brackets)
    cols = min(n, 4)
    fig, axes = subplots(math.ceil(n / cols), cols, figsize=(3.2 * cols, 2.6 * math.ceil(n / cols)), squeeze=False)
    log = search["settings"]["log"]
    for ax, b in zip(axes.flat, brackets.itertuples()):
        mine = points[points.combination == b.combination]
        ax.plot(mine.value, mine.fraction, "o", color="C0")
        if np.isfinite(b.estimate):
            ax.axvspan(b.estimate_lo, b.estimate_hi, color="0.85")
        if np.isfinite(b.logistic) and np.isfinite(b.slope):
            xs = (np.geomspace if log else np.linspace)(mine.value.min(), mine.value.max(), 200)
            u, ut = (np.log(xs), math.log(b.logistic)) if log else (xs, b.logistic)
            ax.plot(xs, 1 / (1 + np.exp(-b.slope * (u - ut))), "k-", lw=1)
        ax.axhline(search["settings"]["fraction"], color="0.5", ls=":", lw=1)
        ax.set_xscale("log" if log else "linear")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(b.combination, fontsize=8)
        ax.set_xlabel(search["key"], fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("fraction of seeds")
    return save_figure(fig, out_dir / "threshold_fractions")[0]
