"""Open question 3 of the paper: does the flow escape the kernel ("lazy") regime, where the local P-L argument lives?
The feature-learning meter (diagnostics.feature_learning) of trained runs against the initialization scale and the
width.

Method: one job per width M (teacher task, L = 4), replicas over init.scale_u x seed, each with its own step
dt = dt0 / max(1, scale_u^2) (the kernel's top eigenvalue grows like scale_u^2: a fixed dt would leave the stable
range), trained until the risk is 1e-2 of its start (trainer.converge_ratio) or the step budget is spent. Per run,
from its initial and final networks: the kernel movement ||K_T - K_0||_F / ||K_0||_F, the distance from the
linearized flow ||f_T - f_T^lin|| / ||f_T - f_0|| and the feature movement. log(kernel movement) = a log(scale_u) +
b log(M) + c is fitted over every run with t-intervals.

The form tested: under the mean-field 1/(L M) scaling the width alone does not make training lazy, the
initialization scale does: b = 0 (NTK-type scaling would give b = -1/2) and a < 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from ..api import load_run
from ..diagnostics.feature_learning import feature_learning
from . import figures as FG
from . import stats as ST
from .common import Verdict, fresh_runs, run_replicas

SOURCE = ("Barboni, Peyre, Vialard (arXiv 2403.12887), open question 3: can the flow escape the kernel regime? "
          "Meter after depth-muP / CompleteP's relative distance from linearization")
SIZES = {
    "default": dict(M=[16, 64, 256, 1024], scales=[0.25, 0.5, 1, 2, 4, 8], seeds=3, L=4, n=32, dt=0.2, steps=1500),
    "quick": dict(M=[8, 32], scales=[0.5, 2, 8], seeds=2, L=2, n=16, dt=0.2, steps=300),
}
METERS = ("kernel_movement", "linearization_distance", "feature_movement")


def step_for(scale: float, dt0: float) -> float:
    """dt0 / max(1, scale^2): the same fraction of the stable range at every scale."""
    return dt0 / max(1.0, scale**2)


def meters(summary: dict, scale: float, dt: float) -> dict:
    """The meter of one trained replica, read back with load_run."""
    run = load_run(summary["run_dir"])
    x, y = run.data.x_train, run.data.y_train
    fl = feature_learning(run.init, run.final, x, y, summary["steps"], dt)
    return dict(scale_u=scale, dt=dt, steps=summary["steps"], status=summary["status"],
                risk_ratio=summary["final"]["risk_train"] / summary["risk_init"], **fl.row())


def exponents(table: pd.DataFrame):
    """(a, b) of log(kernel movement) = a log(scale_u) + b log(M) + c (Intervals), and the exponent in M at each
    scale_u alone."""
    a, b = ST.loglinear_fit(table[["scale_u", "M"]].to_numpy(), table.kernel_movement)
    return a, b, {v: ST.loglog_slope(g.M, g.kernel_movement) for v, g in table.groupby("scale_u")}


def run(where: Path, quick: bool = False, seeds: Optional[int] = None):
    size = SIZES["quick" if quick else "default"]
    S = seeds or size["seeds"]
    runs = fresh_runs(where)
    rows = []
    for M in size["M"]:
        grid = [(s, v) for v in size["scales"] for s in range(S)]
        replicas = [f"seed={s} init.scale_u={v} optim.dt={step_for(v, size['dt']):.6g}" for s, v in grid]
        summaries = run_replicas(runs / f"M={M}", [
            f"model.L={size['L']}", f"model.M={M}", f"data.n_train={size['n']}", "data.n_test=8", "model.dtype=float64",
            f"trainer.max_steps={size['steps']}", "trainer.converge_ratio=1e-2", "trainer.log_every=100"], replicas)
        rows += [dict(M=M, seed=s, **meters(sm, v, float(f"{step_for(v, size['dt']):.6g}")))
                 for (s, v), sm in zip(grid, summaries)]
    table = pd.DataFrame(rows)
    ok = table[(table.status == "converged") & (table.kernel_movement > 0)]
    a, b, by_scale = exponents(ok)
    passed = b.contains(0.0) and a.hi < 0
    lazy = ok.groupby("scale_u")[list(METERS)].median()
    verdict = Verdict(
        name="kernel_regime", source=SOURCE,
        claim=("log(kernel movement) = a log(scale_u) + b log(M) + c over every converged run (risk at 1e-2 of its "
               "start): under the mean-field scaling the width does not make training lazy, b = 0 (NTK-type scaling: "
               "-1/2), and a larger initialization scale does, a < 0 (PASS: 0 in b's t-interval and a's lies below 0)"),
        quantity="exponent b of the kernel movement in M", value=b.value, lo=b.lo, hi=b.hi, claimed="0 (and a < 0)",
        passed=passed,
        answer=(f"kernel movement ~ scale_u^{a.value:.2f} [{a.lo:.2f}, {a.hi:.2f}] M^{b.value:.2f}; median meters by "
                "scale_u (kernel movement / distance from linearization / feature movement): "
                + "; ".join(f"{s:g}: {r.kernel_movement:.3g} / {r.linearization_distance:.3g} / {r.feature_movement:.3g}"
                            for s, r in lazy.iterrows())
                + f"; {len(table) - len(ok)} of {len(table)} runs did not converge within the step budget"),
        note=("" if passed else "see the exponents: the width or the scale does not act as claimed at these sizes; ")
        + "exponent of the kernel movement in M at each scale_u: " + ", ".join(f"{v:g}: {e:+.2f}" for v, e in
                                                                               by_scale.items()),
        sizes={"M": size["M"], "scale_u": size["scales"], "L": size["L"], "n": size["n"], "dt0": size["dt"],
               "max_steps": size["steps"], "stop": "risk <= 1e-2 x initial"}, seeds=S)
    return verdict, table, figure(ok, size, (a, b))


def figure(table: pd.DataFrame, size: dict, fits):
    fig, axes = FG.panels(3, 4.6, 4.0)
    colours = FG.palette(len(size["M"]))
    for ax, meter in zip(axes, METERS):
        for M, c in zip(size["M"], colours):
            mine = table[table.M == M]
            Y = mine.pivot(index="seed", columns="scale_u", values=meter)
            FG.seeds_band(ax, Y.columns.to_numpy(), Y.to_numpy(), c, f"$M$ = {M}")
        if meter == "kernel_movement":
            med = table.groupby("scale_u").kernel_movement.median()
            FG.fitted_power_law(ax, med.index, med.values, fits[0], "black", "fitted", r"s_u")
            FG.reference_power_law(ax, size["scales"], float(med.iloc[0]), -1.0, r"lazy limit: $s_u^{-1}$")
        FG.finish(ax, r"initialization scale $s_u$", meter.replace("_", " "),
                  {"kernel_movement": r"$\|K_T - K_0\|_F / \|K_0\|_F$",
                   "linearization_distance": r"$\|f_T - f^{lin}_T\| / \|f_T - f_0\|$",
                   "feature_movement": r"$\|F_l(T) - F_l(0)\|_F / \|F_l(0)\|_F$ (mean over $l$)"}[meter],
                  logy=True, ticks=size["scales"])
    return fig
