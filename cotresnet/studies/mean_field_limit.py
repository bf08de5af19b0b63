"""The mean-field limit, measured: as depth L and width M grow together at a fixed step dt, the risk curves over flow
time approach one limit curve (the COT flow of the limit measure; docs/math.md section 2).

Method: sizes (L, M) = (L, r L) doubling together, one job per size with many seeds as replicas (teacher task, float32
is enough: the differences measured are far above its round-off), rows every `log_every` steps so that every size has
the risk on one grid of flow times. The gap between a size and the next,
    Delta(L) = sup_t |E risk_{L, M}(t) - E risk_{2L, 2M}(t)|,
takes E as the mean over seeds (a size's seeds are independent draws, so Delta also holds the means' sampling
noise, of the order of the seeds' spread / sqrt(seeds)). log Delta = p log L + c is fitted on the bootstrap of the
seeds (each size's seeds resampled), with the percentile interval of p.

The form tested: the limit exists, Delta(L) -> 0 as a power of L (p < 0); with M proportional to L the depth
discretization (Euler, O(1/L)) and the particle bias of a mean (O(1/M)) both give p = -1, reported next to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..api import load_run
from . import figures as FG
from . import stats as ST
from .common import Verdict, fresh_runs, replica_list, run_replicas

SOURCE = ("Barboni, Peyre, Vialard (arXiv 2403.12887): training the discretized ResNet follows the COT flow of the "
          "limit measure (consistency at finite width); experiment=mean_field_limit")
SIZES = {
    "default": dict(L=[2, 4, 8, 16, 32], ratio=4, seeds=30, n=64, dt=0.1, steps=200, log_every=10),
    "quick": dict(L=[2, 4, 8], ratio=4, seeds=8, n=32, dt=0.1, steps=60, log_every=10),
}


def curves(run_dirs) -> np.ndarray:
    """The logged risk curves of the runs: (runs, rows)."""
    return np.array([load_run(d).metrics.risk_train.to_numpy() for d in run_dirs])


def gaps(risk: np.ndarray) -> np.ndarray:
    """Delta between successive sizes: risk (S, K, T) for K sizes -> (K - 1,) of sup_t |mean_s difference|."""
    mean = risk.mean(0)
    return np.abs(mean[:-1] - mean[1:]).max(-1)


def rate(Ls, risk: np.ndarray, draws: int = 1000) -> ST.Interval:
    """The exponent of Delta in L (the smaller L of each pair), bootstrapped over seeds: risk (S, K, T)."""
    S = risk.shape[0]
    flat = risk.reshape(S, -1)
    return ST.bootstrap(lambda Y: ST.loglog_slope(Ls[:-1], gaps(Y.reshape(risk.shape))), flat, draws=draws)


def run(where: Path, quick: bool = False, seeds: Optional[int] = None):
    size = SIZES["quick" if quick else "default"]
    S, Ls = seeds or size["seeds"], size["L"]
    runs = fresh_runs(where)
    risk = []
    for L in Ls:
        summaries = run_replicas(runs / f"L={L}", [
            f"model.L={L}", f"model.M={size['ratio'] * L}", f"data.n_train={size['n']}", "data.n_test=8",
            f"optim.dt={size['dt']}", f"trainer.max_steps={size['steps']}", f"trainer.log_every={size['log_every']}"],
            replica_list(seed=range(S)))
        risk.append(curves([sm["run_dir"] for sm in summaries]))
    risk = np.stack(risk, 1)  # (S, K, T)
    times = np.arange(risk.shape[-1]) * size["log_every"] * size["dt"]
    iv = rate(Ls, risk)
    delta = gaps(risk)
    passed = iv.hi < 0
    verdict = Verdict(
        name="mean_field_limit", source=SOURCE,
        claim=("Delta(L) = sup_t |mean risk at (L, M) - mean risk at (2L, 2M)| over flow time, M = "
               f"{size['ratio']} L, falls as a power L^p with p < 0: the risk curves have a limit (PASS: the bootstrap "
               "interval of p lies below 0); p = -1 is the rate the Euler depth discretization and the particle bias "
               "give"),
        quantity="rate p of Delta(L)", value=iv.value, lo=iv.lo, hi=iv.hi, claimed="p < 0 (reference -1)",
        passed=passed,
        answer=("Delta = " + ", ".join(f"{L}->{2 * L}: {d:.3g}" for L, d in zip(Ls, delta))
                + f"; p = -1 {'inside' if iv.contains(-1.0) else 'outside'} the interval"),
        note="" if passed else "the gaps do not fall with L at these sizes and seeds",
        sizes={"L": Ls, "M": [size["ratio"] * L for L in Ls], "n": size["n"], "dt": size["dt"],
               "flow_time": size["dt"] * size["steps"]}, seeds=S)
    table = pd.DataFrame([dict(seed=s, L=L, M=size["ratio"] * L, flow_time=t, risk=risk[s, k, j])
                          for s in range(S) for k, L in enumerate(Ls) for j, t in enumerate(times)])
    return verdict, table, figure(Ls, times, risk, iv, size)


def figure(Ls, times, risk, iv, size):
    fig, (ax, bx) = FG.panels(2)
    for k, (L, c) in enumerate(zip(Ls, FG.palette(len(Ls)))):
        FG.seeds_band(ax, times, risk[:, k], c, f"$(L, M)$ = ({L}, {size['ratio'] * L})", marker="")
    FG.finish(ax, "flow time $t$", "training risk", f"risk curves (median, 10-90 % of {risk.shape[0]} seeds)",
              logx=False, logy=True)
    boot = np.array([gaps(risk[np.random.default_rng(b).integers(0, len(risk), len(risk))]) for b in range(200)])
    mid = FG.seeds_band(bx, Ls[:-1], boot, "tab:blue", r"$\Delta(L)$ (median, 10-90 % of bootstrap)")
    FG.fitted_power_law(bx, Ls[:-1], mid, iv, "tab:blue", "fitted", "L")
    FG.reference_power_law(bx, Ls[:-1], mid[0], -1.0, r"reference: $L^{-1}$")
    FG.finish(bx, f"$L$ (and $M$ = {size['ratio']} $L$)", r"$\sup_t |\bar R_{L,M}(t) - \bar R_{2L,2M}(t)|$",
              "distance to the next size", logy=True, ticks=Ls[:-1])
    return fig
