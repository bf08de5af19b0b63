"""The width at which the flow converges grows with the number of samples N (Barboni, Peyre, Vialard: the local P-L
argument needs enough features for the tangent kernel of the N samples to be well conditioned; the width_threshold
experiment measures it).

The search of experiment=width_threshold, run through the public API: for each N, a threshold search
(sweeps.threshold.ThresholdSearch) brackets and bisects the width M in log space; a point runs its seeds as replicas of
one job and succeeds when at least half of them reach 1e-3 of their initial risk within the flow time
trainer.max_steps x optim.dt. The threshold M*(N) is the logistic fit of every seed's outcome (profile-likelihood
interval), and log M* = alpha log N + c is fitted by weighted least squares with a t-interval for alpha.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from ..sweeps.threshold import SearchConfig, ThresholdSearch
from . import figures as FG
from . import stats as ST
from .common import Verdict, fresh_runs, replica_list, run_replicas

SOURCE = ("Barboni, Peyre, Vialard, Understanding the training of infinitely deep and wide ResNets with Conditional "
          "Optimal Transport (arXiv 2403.12887): local P-L convergence with enough features; experiment=width_threshold")
JOB = ["model.L=2", "data.n_test=16", "optim.dt=3.0", "trainer.max_steps=400", "trainer.converge_ratio=1e-3",
       "trainer.log_every=50"]
SIZES = {
    "default": dict(N=[16, 32, 64, 128], seeds=6, lo=2, hi=128, ratio=1.1),
    "quick": dict(N=[8, 16, 32], seeds=2, lo=2, hi=32, ratio=1.3),
}


def search(runs: Path, Ns, seeds, lo: float, hi: float, ratio: float) -> ThresholdSearch:
    """The threshold search of M per N, every point one job of its seeds (replicas) in runs/N=<N>,M=<M>."""
    cfg = SearchConfig(key="model.M", lo=lo, hi=hi, combinations=tuple(f"{n}" for n in Ns), integer=True,
                       seeds=tuple(seeds), ratio=ratio, fraction=0.5, max_expansions=4)
    s = ThresholdSearch(cfg)
    while not s.done:
        rows = []
        for p in s.next_points():
            summaries = run_replicas(runs / f"N={p.combination},M={int(p.value)}",
                                     [*JOB, f"data.n_train={p.combination}", f"model.M={int(p.value)}"],
                                     replica_list(seed=p.seeds))
            rows += [dict(combination=p.combination, value=p.value, seed=seed, success=sm["status"] == "converged")
                     for seed, sm in zip(p.seeds, summaries)]
        s.record(rows)
    return s


def scaling(estimates: pd.DataFrame) -> ST.PowerLawFit:
    """log M* = alpha log N + c over the combinations (labels N), weighted by each threshold's interval."""
    N = estimates.combination.astype(float).to_numpy()
    return ST.power_law_fit(N, estimates.point, intervals=estimates[["lo", "hi"]].to_numpy())


def thresholds(s: ThresholdSearch) -> pd.DataFrame:
    """Per N: the logistic threshold with its interval, or, where every seed agreed (separable), the bracket's
    geometric midpoint with the bracket as interval (as the threshold report does)."""
    est = s.estimates()
    est["point"] = np.where(est.separable, np.sqrt(est.lo * est.hi), est.threshold)
    return est


def run(where: Path, quick: bool = False, seeds: Optional[int] = None):
    size = SIZES["quick" if quick else "default"]
    S = seeds or size["seeds"]
    s = search(fresh_runs(where), size["N"], range(S), size["lo"], size["hi"], size["ratio"])
    est = thresholds(s)
    fit = scaling(est)
    passed = fit.alpha_lo > 0
    verdict = Verdict(
        name="width_threshold", source=SOURCE,
        claim=("the width M* from which the flow reaches 1e-3 of its initial risk within a fixed flow time grows "
               "with N: log M* = alpha log N + c with alpha > 0 (PASS: the t-interval of alpha lies above 0); "
               "alpha = 1 (features in proportion to samples) is the reference"),
        quantity="exponent alpha of M* in N", value=fit.alpha, lo=fit.alpha_lo, hi=fit.alpha_hi,
        claimed="alpha > 0 (reference 1)", passed=passed,
        answer=("M* = " + ", ".join(f"{float(c):g}: {p:.3g} [{lo:.3g}, {hi:.3g}]" for c, p, lo, hi in
                                    est[["combination", "point", "lo", "hi"]].itertuples(index=False))
                + f"; alpha = 1 {'inside' if fit.alpha_lo <= 1 <= fit.alpha_hi else 'outside'} the interval; "
                f"{int(s.brackets().jobs.sum())} jobs"),
        note="" if passed else "no significant growth of M* with N at these sizes",
        sizes={"N": size["N"], "L": 2, "M_bracket": [size["lo"], size["hi"]], "ratio": size["ratio"],
               "flow_time": 1200.0, "criterion": "risk <= 1e-3 x initial"}, seeds=S)
    table = s.outcomes().rename(columns={"combination": "N", "value": "M"})
    fig, (ax,) = FG.panels(1, 6.0, 4.5)
    N = est.combination.astype(float).to_numpy()
    ax.errorbar(N, est.point, yerr=[est.point - est.lo, est.hi - est.point], fmt="o", color="tab:blue", capsize=3,
                label="$M^*$ with its 95 % interval (logistic fit over seeds)")
    FG.fitted_power_law(ax, N, est.point, ST.Interval(fit.alpha, fit.alpha_lo, fit.alpha_hi), "tab:blue", "fitted",
                        "N")
    FG.reference_power_law(ax, N, float(est.point.iloc[0]), 1.0, r"reference: $M^* \propto N$")
    FG.finish(ax, "$N$ (training samples)", "$M^*$ (particles per layer)", "width from which the flow converges",
              logy=True, ticks=list(N))
    return verdict, table, fig
