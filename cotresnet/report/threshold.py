"""A threshold search's report: it reads the tables the search wrote (cotresnet.sweeps.threshold_tables) and
draws the boundary over the phase diagram, each combination's success fraction with its logistic fit, and
the scaling of the threshold with the other swept key.

    threshold_report(sweep_dir, out_dir) -> {"figures", "boundary", "brackets", "points", "outcomes",
                                             "scaling", "lines", "warnings"}

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
from .style import SINGLE, SYMBOLS, label, log_axis, save_figure, styled, subplots, symbol_text


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


def threshold_report(sweep_dir, out_dir, formats=("png",)) -> dict:
    """Write the boundary table, the scaling table and the figures into out_dir; returns the figure
    paths, the tables (DataFrames; scaling: a one-row DataFrame or None), printable lines and warnings
    (combinations whose threshold is unresolved, with why)."""
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
    figures = _phase_diagram(out_dir, search, boundary, points, fit, formats) + \
        _fractions(out_dir, search, brackets, points, formats)
    warnings = [f"threshold of {r.combination}: unresolved ({r.note if isinstance(r.note, str) and r.note else r.status})"
                for r in boundary.itertuples() if not bool(r.resolved)]
    return {"figures": figures, "boundary": boundary, "brackets": brackets, "points": points,
            "outcomes": outcomes, "scaling": scaling, "lines": lines, "warnings": warnings}


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


@styled
def _phase_diagram(out_dir: Path, search: dict, boundary: pd.DataFrame, points: pd.DataFrame, fit, formats) -> list:
    """Evaluated points (filled: success, cross: failure; colour: fraction of seeds) left of each combination,
    the final bracket (a grey bar) between, the estimate with its interval (open where it is unresolved) at the
    combination itself, where the power-law fit (with its interval) and its reference slope are drawn."""
    numeric = "x" in boundary
    pos = dict(zip(boundary.combination, boundary.x if numeric else range(len(boundary))))
    shift = (lambda v: v / 1.22) if numeric else (lambda v: v - 0.3)  # the points, left of the estimate
    shift2 = (lambda v: v / 1.1) if numeric else (lambda v: v - 0.15)  # the bracket between
    fig, ax = subplots(width=SINGLE * 1.7, height=3.0)
    px = points.combination.map(pos).map(shift)
    for ok, marker in ((True, "o"), (False, "x")):
        sel = points.success == ok
        sc = ax.scatter(px[sel], points.value[sel], c=points.fraction[sel], cmap="RdYlGn", vmin=0, vmax=1,
                        marker=marker, s=22, zorder=3, lw=1)
        ax.scatter([], [], marker=marker, s=22, lw=1, color="#1a9850" if ok else "#d73027",
                   label="success (colour: fraction of seeds)" if ok else "failure")
    fig.colorbar(sc, ax=ax, label="fraction of seeds that succeed", pad=0.02)
    ax.vlines(boundary.combination.map(pos).map(shift2), boundary.lo, boundary.hi, colors="0.45", lw=4, alpha=0.7,
              label="final bracket", zorder=1)
    est = boundary[np.isfinite(boundary.estimate)]
    for resolved, face in ((True, "k"), (False, "none")):
        e = est[est.resolved.astype(bool) == resolved]
        if len(e):
            ax.errorbar(e.combination.map(pos), e.estimate, yerr=[e.estimate - e.estimate_lo,
                        e.estimate_hi - e.estimate], fmt="D", color="k", mfc=face, ms=4, capsize=2, zorder=4,
                        label="threshold estimate (95 %)" if resolved else "estimate, unresolved (see the table)")
    if fit is not None:
        y, x = (SYMBOLS.get(k, k) for k in (search["key"], search["combination_keys"][0]))
        xs = np.geomspace(boundary.x.min(), boundary.x.max(), 50)
        ax.plot(xs, np.exp(fit["c"]) * xs ** fit["alpha"], "k--", lw=1,
                label=f"fit {y}* ∝ {x}^α: α = {fit['alpha']:.2f} [{fit['alpha_lo']:.2f}, {fit['alpha_hi']:.2f}] "
                      f"({fit['level']:.0%})")
        if (search["key"], search["combination_keys"][0]) == ("model.M", "data.n_train"):
            # overparameterization's reference: the tangent kernel is well conditioned once M is of order N
            mid = math.exp(np.mean(np.log(xs)))
            ax.plot(xs, np.exp(fit["c"]) * mid ** fit["alpha"] * xs / mid, color="0.55", ls=":", lw=1,
                    label=f"reference {y}* ∝ {x} (α = 1)")
    if numeric:
        from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

        ax.set_xscale("log")
        ticks = sorted(boundary.x)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FixedFormatter([f"{v:g}" for v in ticks]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(min(ticks) / 1.5, max(ticks) * 1.25)
        ax.set_xlabel(label(search["combination_keys"][0]))
    else:
        ax.set_xticks(range(len(boundary)), [symbol_text(c) for c in boundary.combination], rotation=20, fontsize=7)
        ax.set_xlim(-0.6, len(boundary) - 0.5)
    if search["settings"]["log"]:
        log_axis(ax)
    ax.set_ylabel(label(search["key"]))
    ax.set_title(f"where training succeeds: {'above' if search['settings']['direction'] == 'above' else 'below'} "
                 f"the threshold of {label(search['key'])}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.32, 1.0), fontsize=6, borderaxespad=0.0)
    return save_figure(fig, out_dir / "threshold_phase_diagram", formats)


@styled
def _fractions(out_dir: Path, search: dict, brackets: pd.DataFrame, points: pd.DataFrame, formats) -> list:
    """Per combination: the fraction of seeds that succeed at each evaluated value, the logistic curve
    P = sigmoid(slope (u - log T)) where it is identified, and the estimate's interval."""
    n = len(brackets)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = subplots(rows, cols, width=min(1.9 * cols, 7.0), height=1.9 * rows + 0.4, squeeze=False,
                         sharey=True)
    log = search["settings"]["log"]
    for ax, b in zip(axes.flat, brackets.itertuples()):
        mine = points[points.combination == b.combination]
        if np.isfinite(b.estimate):
            ax.axvspan(b.estimate_lo, b.estimate_hi, color="0.88", label="estimate's interval")
            ax.axvline(b.estimate, color="0.4", lw=0.8)
        if np.isfinite(b.logistic) and np.isfinite(b.slope):
            xs = (np.geomspace if log else np.linspace)(mine.value.min(), mine.value.max(), 200)
            u, ut = (np.log(xs), math.log(b.logistic)) if log else (xs, b.logistic)
            ax.plot(xs, 1 / (1 + np.exp(-b.slope * (u - ut))), "k-", lw=0.9, label="logistic fit")
        ax.plot(mine.value, mine.fraction, "o", color="tab:blue", ms=3.5, label="measured", zorder=3)
        ax.axhline(search["settings"]["fraction"], color="0.5", ls=":", lw=0.8, label="success fraction")
        if log:
            log_axis(ax, "x")
        ax.set_ylim(-0.05, 1.05)
        seeds = f"{b.never:g}" if isinstance(b.never, float) else str(b.never)
        never = f"; seed(s) {seeds} never succeed" if pd.notna(b.never) and seeds else ""
        ax.set_title(symbol_text(b.combination) + ("" if bool(b.resolved) else " (unresolved)") + never, fontsize=7)
        ax.set_xlabel(label(search["key"]), fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of seeds")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=6, bbox_to_anchor=(0.5, 0.0))
    fig.subplots_adjust(bottom=0.32 / rows + 0.1, top=0.9, wspace=0.15, hspace=0.7)
    return save_figure(fig, out_dir / "threshold_fractions", formats)
