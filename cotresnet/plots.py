"""The run directory's plots, drawn from metrics.csv."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _panel(ax, df, columns, labels, logy=True, styles=None):
    drawn = False
    for i, (c, lab) in enumerate(zip(columns, labels)):
        if c in df and df[c].notna().any():
            sub = df[["flow_time", c]].dropna()
            ax.plot(sub["flow_time"], sub[c], (styles or {}).get(c, "-"), label=lab, marker="." if len(sub) < 30 else None)
            drawn = True
    if logy and drawn:
        ax.set_yscale("log")
    ax.set_xlabel("flow time t = step * dt")
    if drawn:
        ax.legend()
    return drawn


def plot_run(run_dir: Path, certified_radius: Optional[float] = None) -> list:
    """Writes plots/risk.png, pl_ratio.png, lambda_min.png, distance.png; returns the paths written."""
    from .rundir import read_metrics

    run_dir = Path(run_dir)
    df = read_metrics(run_dir)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    specs = [
        ("risk.png", "risk and its flow-fidelity prediction L(0) exp(-int G/L dt)",
         ["risk_train", "risk_test", "risk_predicted"], ["train", "test", "predicted by the flow"], True,
         {"risk_predicted": "--"}),
        ("pl_ratio.png", "P-L ratio G/L and its kernel lower bound 2 lambda_min(K)/n",
         ["pl_ratio", "pl_ratio_probe", "pl_lower_bound"], ["G/L (train)", "G/L (probe)", "2 lambda_min(K)/n"], True,
         {"pl_lower_bound": "--"}),
        ("lambda_min.png", "smallest kernel eigenvalues",
         ["lambda_min_tangent", "lambda_min_feature"], ["tangent K (probe)", "feature K_l (min over layers)"], True,
         None),
        ("distance.png", "distance to initialization (COT metric)",
         ["cot_dist_init", "cot_dist_init_upper", "path_length"], ["W_COT exact", "identity coupling", "path length"],
         False, None),
    ]
    written = []
    for name, title, cols, labels, logy, styles in specs:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        _panel(ax, df, cols, labels, logy, styles)
        if name == "distance.png" and certified_radius is not None and certified_radius < float("inf"):
            ax.axhline(certified_radius, color="k", ls=":", label=f"certified radius R0 = {certified_radius:.3g}")
            ax.legend()
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    return written
