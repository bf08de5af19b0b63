"""The run directory's plots (PNG and PDF), drawn from metrics.csv and spectrum.csv."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from ..rundir import contract as RD
from .style import colours, save_figure, subplots

TIME = "flow time t"


def _curves(ax, df, columns, labels, styles=None) -> bool:
    """Draw the finite positive points of each column against flow time (log y); True if any."""
    drawn = False
    for c, lab in zip(columns, labels):
        if c not in df:
            continue
        sub = df[["flow_time", c]].dropna()
        sub = sub[sub[c] > 0]
        if len(sub):
            ax.plot(sub["flow_time"], sub[c], (styles or {}).get(c, "-"), label=lab, marker="." if len(sub) < 30 else None)
            drawn = True
    ax.set_xlabel(TIME)
    if drawn:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=ax.transAxes)
    return drawn


def _spectrum(ax, run_dir: Path) -> None:
    """The residual's energy share per decade of K's eigenvalues, at each kernel step (stacked)."""
    try:
        sp = RD.read_table(run_dir, RD.SPECTRUM)
    except RD.RunDirError:
        sp = None
    if sp is None or sp.empty:
        ax.text(0.5, 0.5, "no kernel steps", ha="center", va="center", transform=ax.transAxes)
        return
    table = sp.pivot_table(index="flow_time", columns="decade", values="residual_share", aggfunc="sum").fillna(0.0)
    order = sorted((c for c in table.columns if c != "unresolved"), key=float) + \
        (["unresolved"] if "unresolved" in table.columns else [])
    cmap = colours("viridis", max(len(order), 2))
    bottom = 0.0
    for i, dec in enumerate(order):
        label = "below resolution" if dec == "unresolved" else f"[1e{int(float(dec))}, 1e{int(float(dec)) + 1})"
        ax.bar(range(len(table)), table[dec], bottom=bottom, color="0.6" if dec == "unresolved" else cmap(i), label=label)
        bottom = bottom + table[dec]
    ax.set_xticks(range(len(table)), [f"{t:.3g}" for t in table.index], rotation=45, fontsize=7)
    ax.set_xlabel(f"{TIME} at kernel steps")
    ax.set_ylabel("share of |r|^2")
    ax.legend(fontsize=7, title="eigenvalues of K", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))


FIGURES = ("risk", "pl_ratio", "lambda_min", "distance", "residual_spectrum")


def missing_figures(run_dir: Path, formats) -> List[str]:
    """The run figures (name.format) a run directory lacks."""
    names = FIGURES + (("depths",) if (Path(run_dir) / RD.DEPTHS).exists() else ())
    return [f"{n}.{f}" for n in names for f in formats if not (Path(run_dir) / RD.PLOTS / f"{n}.{f}").exists()]


def plot_run(run_dir: Path, certified_radius: Optional[float] = None, formats=("png", "pdf")) -> List[Path]:
    """plots/{risk, pl_ratio, lambda_min, distance, residual_spectrum[, depths]} in each format; returns the paths."""
    run_dir = Path(run_dir)
    df = RD.read_table(run_dir)
    out = run_dir / RD.PLOTS
    out.mkdir(exist_ok=True)
    specs = [
        ("risk", "risk and its flow-fidelity prediction L(0) exp(-int G/L dt)",
         ["risk_train", "risk_test", "risk_predicted"], ["train", "test", "predicted by the flow"], {"risk_predicted": "--"}),
        ("pl_ratio", "P-L ratio G/L and its kernel lower bound 2 lambda_min(K)/n",
         ["pl_ratio", "pl_ratio_probe", "pl_lower_bound"], ["G/L (train)", "G/L (kernel set)", "2 lambda_min(K)/n"],
         {"pl_lower_bound": "--"}),
        ("lambda_min", "smallest kernel eigenvalues (dotted: their resolution)",
         ["lambda_min_tangent", "lambda_min_feature", "lambda_min_tangent_resolution", "lambda_min_feature_resolution"],
         ["tangent K", "feature K_l (min over layers)", "resolution of K", "resolution of K_l"],
         {"lambda_min_tangent_resolution": ":", "lambda_min_feature_resolution": ":"}),
        ("distance", "distance to the initialization (COT metric)",
         ["path_length", "cot_dist_init_upper", "cot_dist_init", "cot_dist_init_lower"],
         ["path length", "identity coupling (upper)", "W_COT exact", "layer means (lower)"], None),
    ]
    written = []
    for name, title, cols, labels, styles in specs:
        fig, ax = subplots(figsize=(6.4, 4.2))
        _curves(ax, df, cols, labels, styles)
        if name == "distance" and certified_radius:
            ax.axhline(certified_radius, color="k", ls=":", label=f"certified radius R0 = {certified_radius:.3g}")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        written += save_figure(fig, out / name, formats)
    fig, ax = subplots(figsize=(7.6, 4.2))
    _spectrum(ax, run_dir)
    ax.set_title("where the residual lives in the tangent kernel's spectrum", fontsize=10)
    written += save_figure(fig, out / "residual_spectrum", formats)
    if (run_dir / RD.DEPTHS).exists():
        fig, ax = subplots(figsize=(6.4, 4.2))
        depth_histograms(ax, RD.read_table(run_dir, RD.DEPTHS))
        written += save_figure(fig, out / "depths", formats)
    return written


def depth_histograms(ax, depths) -> None:
    """Depth-mobile particles: the share of particles per depth bin (colour) over flow time."""
    from matplotlib.colors import Normalize

    if depths.empty:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        return
    table = depths.pivot_table(index="bin_lo", columns="flow_time", values="count", aggfunc="sum")
    share = table / table.sum(axis=0)
    times = list(share.columns)
    im = ax.imshow(share.values, origin="lower", aspect="auto", cmap="magma", norm=Normalize(0, share.values.max()),
                   extent=(times[0], times[-1] if len(times) > 1 else times[0] + 1, 0, 1))
    ax.figure.colorbar(im, ax=ax, label="share of particles per depth bin")
    ax.set_xlabel(TIME)
    ax.set_ylabel("depth s")
    ax.set_title("depth marginal over flow time (uniform: every layer keeps its mass)", fontsize=10)
