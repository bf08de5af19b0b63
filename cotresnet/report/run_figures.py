"""A run's figure: one page of panels from its metrics.csv, spectrum.csv, depths.csv and summary.json, with the
theory's curves drawn against the measurements (the flow's prediction of the risk, the certificate's
guaranteed decay and rate, the kernel bound of the P-Ł ratio, the certified region's limits).

    plots/run.png        (and run.pdf / run.svg when asked: `plots=[png,pdf]`, `cotresnet-plot --format pdf`)

A single run draws it once its job ends; the jobs of a sweep draw none by default (the sweep report is where
a study's figures live): `cotresnet-plot RUN_DIR` draws any run's on demand.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from ..rundir import contract as RD
from .style import (
    DOUBLE,
    colours,
    decade_label,
    label,
    log_axis,
    save_figure,
    small_numbers,
    spans_decades,
    styled,
    subplots,
)

FIGURE = "run"
TIME = "flow time t"


def missing_figures(run_dir: Path, formats) -> List[str]:
    """The run figure's files (run.<format>) a run directory lacks."""
    return [f"{FIGURE}.{f}" for f in formats if not (Path(run_dir) / RD.PLOTS / f"{FIGURE}.{f}").exists()]


def _read(run_dir: Path, name: str):
    try:
        return RD.read_table(run_dir, name)
    except RD.RunDirError:
        return None


def _series(ax, df, column: str, text: str, style: str = "-", **kw) -> bool:
    """The finite positive values of a column against flow time: a line where it is logged at every row,
    markers alone where it is measured at a few steps (no line pretends to know what lies between)."""
    if df is None or column not in df:
        return False
    sub = df[["flow_time", column]].dropna()
    sub = sub[sub[column] > 0]
    if sub.empty:
        return False
    sparse = len(sub) < 0.5 * len(df) or len(sub) < 8
    ax.plot(sub["flow_time"], sub[column], "o" if sparse else style, label=text, **kw)
    return True


def _risk(ax, m, s) -> None:
    _series(ax, m, "risk_train", "training")
    _series(ax, m, "risk_test", "test", color="tab:orange")
    _series(ax, m, "risk_predicted", "flow: ℒ(0)·exp(−∫G/ℒ dt)", "--", color="k", lw=0.8)
    c = s.get("certificate") or {}
    if c.get("c0") and s.get("risk_init"):
        t = np.linspace(0.0, float(m["flow_time"].max()), 50)
        ax.plot(t, s["risk_init"] * np.exp(-c["c0"] * t), ":", color="tab:red", lw=1.0,
                label="certified: ℒ(0)·exp(−c₀t)" + ("" if c.get("inside_theory") else " (no theorem)"))
    log_axis(ax)
    ax.set_ylabel("risk ℒ")
    ax.set_title("(a) risk and its predictions")


def _pl(ax, m, s) -> None:
    _series(ax, m, "pl_ratio", "G/ℒ")
    _series(ax, m, "pl_lower_bound", "kernel bound 2λₘᵢₙ(K)/n", color="tab:red")
    c = s.get("certificate") or {}
    if c.get("c0"):
        ax.axhline(c["c0"], ls=":", color="tab:red", lw=1.0, label="certified rate c₀")
    log_axis(ax)
    ax.set_ylabel("P-Ł ratio G/ℒ")
    ax.set_title("(b) Polyak-Łojasiewicz ratio")


def _eigenvalues(ax, m) -> None:
    drawn = _series(ax, m, "lambda_min_tangent", "λₘᵢₙ(K)")
    drawn |= _series(ax, m, "lambda_min_feature", "minₗ λₘᵢₙ(Kₗ)", color="tab:green")
    for col, colour in (("lambda_min_tangent_resolution", "tab:blue"), ("lambda_min_feature_resolution", "tab:green")):
        if m is not None and col in m and m[col].notna().any():
            sub = m[["flow_time", col]].dropna()
            ax.fill_between(sub["flow_time"], 0, sub[col], color=colour, alpha=0.12, lw=0)
    if m is not None and "lambda_min_feature" in m and (m["lambda_min_feature"] == 0).any():
        ax.text(0.02, 0.04, "λₘᵢₙ(Kₗ) = 0 exactly: M < n", transform=ax.transAxes, fontsize=6.5)
    if drawn:
        log_axis(ax)
        ax.plot([], [], "s", color="0.8", label="below: unresolved")
    else:
        ax.text(0.5, 0.5, "kernels not measured", ha="center", va="center", transform=ax.transAxes, fontsize=7)
    ax.set_ylabel("smallest eigenvalue")
    ax.set_title("(c) kernels (shaded: resolution)")


def _distance(ax, m, s) -> None:
    c = s.get("certificate") or {}
    radius = f" (certified radius R₀ = {c['certified_radius']:.2g})" if c.get("certified_radius") else ""
    _series(ax, m, "path_length", "path length" + radius)
    if m is not None and "cot_dist_init_upper" in m:
        sub = m[["flow_time", "cot_dist_init_lower", "cot_dist_init_upper"]].dropna()
        exact = m[["flow_time", "cot_dist_init"]].dropna() if "cot_dist_init" in m else sub.iloc[:0]
        if len(exact):
            ax.plot(exact["flow_time"], exact["cot_dist_init"], "o", color="tab:purple", label=label("cot_dist_init"))
        rest = sub[~sub["flow_time"].isin(exact["flow_time"])]
        if len(rest):
            mid = (rest["cot_dist_init_lower"] + rest["cot_dist_init_upper"]) / 2
            ax.errorbar(rest["flow_time"], mid, yerr=[mid - rest["cot_dist_init_lower"], rest["cot_dist_init_upper"] - mid],
                        fmt="none", color="tab:purple", capsize=2, label="W_COT bracket")
    _series(ax, m, "w2_dist_init", "W₂ on (√κ s, θ)", color="tab:brown")
    if m is not None and "path_length" in m and spans_decades(m["path_length"].iloc[1:], 2):
        log_axis(ax)
    ax.set_ylabel("distance to μ₀")
    ax.set_title("(d) transport from μ₀")


def _region(ax, m) -> None:
    """The certified region's two conditions against their limits."""
    drawn = _series(ax, m, "path_over_radius", "path / R₀ (< 1)")
    drawn |= _series(ax, m, "lambda_ratio", "λₘᵢₙ(K(μₜ)) / λₘᵢₙ(K(μ₀)) (≥ 1/2)", color="tab:green")
    if drawn:
        ax.axhline(1.0, ls=":", color="tab:blue", lw=0.8)
        ax.axhline(0.5, ls=":", color="tab:green", lw=0.8)
        log_axis(ax)
    else:
        ax.text(0.5, 0.5, "no certificate: λₘᵢₙ(K(μ₀))\nnot resolved or not measured",
                ha="center", va="center", transform=ax.transAxes, fontsize=7)
    ax.set_title("(e) the certified region")


def _spectrum(ax, sp) -> None:
    """The residual's share of |r|^2 per decade of K's eigenvalues, at each kernel step (stacked)."""
    if sp is None or sp.empty:
        ax.text(0.5, 0.5, "kernels not measured", ha="center", va="center", transform=ax.transAxes, fontsize=7)
        ax.set_title("(f) where the residual lives")
        return
    table = sp.pivot_table(index="flow_time", columns="decade", values="residual_share", aggfunc="sum").fillna(0.0)
    order = sorted((c for c in table.columns if c != "unresolved"), key=float)
    cmap, bottom = colours("viridis", len(order)), np.zeros(len(table))
    for i, dec in enumerate(order + (["unresolved"] if "unresolved" in table.columns else [])):
        colour = "0.75" if dec == "unresolved" else cmap(i)
        k = None if dec == "unresolved" else int(float(dec))
        text = "unresolved" if k is None else f"[{decade_label(10.0**k)}, {decade_label(10.0 ** (k + 1))})"
        ax.bar(range(len(table)), table[dec], bottom=bottom, color=colour, label=text, width=0.7)
        bottom = bottom + table[dec].to_numpy()
    ax.set_xticks(range(len(table)), [f"{t:.3g}" for t in table.index], rotation=45 if len(table) > 5 else 0)
    ax.set_xlabel("t at kernel steps")
    ax.set_ylabel("share of ‖r‖²")
    ax.legend(title="eigenvalues of K", title_fontsize=6.5, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("(f) where the residual lives")


def _depths(ax, depths) -> None:
    """Depth-mobile particles: the share of particles per depth bin over flow time."""
    table = depths.pivot_table(index="bin_lo", columns="flow_time", values="count", aggfunc="sum")
    share = table / table.sum(axis=0)
    times = list(share.columns)
    im = ax.imshow(share.values, origin="lower", aspect="auto", cmap="magma",
                   extent=(times[0], times[-1] if len(times) > 1 else times[0] + 1, 0, 1))
    ax.figure.colorbar(im, ax=ax, label="share of particles")
    ax.set_xlabel(TIME)
    ax.set_ylabel("depth s")
    ax.set_title("(g) depth marginal (uniform: a ResNet)")


@styled
def plot_run(run_dir: Path, formats=("png",)) -> List[Path]:
    """plots/run.<format> for each format; returns the paths."""
    run_dir = Path(run_dir)
    m, sp, depths = _read(run_dir, RD.METRICS), _read(run_dir, RD.SPECTRUM), _read(run_dir, RD.DEPTHS)
    summary = RD.read_summary(run_dir) or {}
    rows = 3 if depths is not None and not depths.empty else 2
    fig, axes = subplots(rows, 3, width=DOUBLE, height=2.7 * rows)
    panels = [lambda a: _risk(a, m, summary), lambda a: _pl(a, m, summary), lambda a: _eigenvalues(a, m),
              lambda a: _distance(a, m, summary), lambda a: _region(a, m), lambda a: _spectrum(a, sp)]
    for ax, draw in zip(axes.flat, panels):
        draw(ax)
        if ax.get_xlabel() == "":
            ax.set_xlabel(TIME)
        last = float(m["flow_time"].max()) if m is not None and len(m) else 0.0
        if ax is not axes.flat[5] and last > 0:  # one time axis for every panel, those with nothing drawn too
            ax.set_xlim(-0.03 * last, 1.03 * last)
            if not 1e-2 <= last < 1e4:
                small_numbers(ax, [last], "x")  # t to 1e15 (a blow-up): "(×10¹⁵)" in the label, no offset text
        if ax is not axes.flat[5] and ax.get_legend_handles_labels()[1]:  # below the axes, never over the data
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), fontsize=6, handlelength=1.5)
    if rows == 3:
        _depths(axes[2, 0], depths)
        for ax in axes[2, 1:]:
            ax.set_visible(False)
    status = summary.get("status", "running")
    fig.suptitle(f"{run_dir.name}: {status}, {summary.get('steps', '?')} steps, t = {summary.get('flow_time', 0):.4g}",
                 fontsize=8, x=0.01, ha="left")
    fig.subplots_adjust(left=0.08, right=0.86, top=1 - 0.25 / rows, bottom=0.5 / rows, hspace=1.15, wspace=0.45)
    # cropped to what is drawn: y-labels at the left edge and the legends below the last row stay whole
    return save_figure(fig, run_dir / RD.PLOTS / FIGURE, formats)
