"""The tangent kernel's smallest eigenvalue reaches its positive infinite-width limit once the width passes about N
(Nguyen, Mondelli, Montufar, "Tight bounds on the smallest eigenvalue of the neural tangent kernel for deep ReLU
networks", ICML 2021: lambda_min(K) is bounded away from 0, at the order of the limit kernel's, with a layer of width
of order N, up to logarithms).

Here: ReLU (as in the source), N inputs on the unit sphere of R^8, the mean-field ResNet with L = 2 layers of M
particles at initialization, K = L M J J^T (float64). Its infinite-width limit is exact: at M = infinity every
residual (1/M) sum_m u_m sigma(.) vanishes (u has mean 0), so x_l = x_0 = E x and
    K_inf[(i, k), (j, k')] = delta_kk' (E sigma(z_i) sigma(z_j) + s_u^2 E sigma'(z_i) sigma'(z_j) (x_i . x_j + 1)),
z = w . x + b Gaussian with covariance s_w^2 x_i . x_j / d + s_b^2: the arc-cosine kernels of order 1 and 0. Per seed,
the width M_half where lambda_min(K_M) / lambda_min(K_inf) reaches 1/2 for good (on the grid M = N/8 .. 16 N,
interpolated in log M); log M_half = alpha log N + c is fitted over every (N, seed) with a t-interval for alpha.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ..diagnostics.kernels import tangent_kernel
from . import figures as FG
from . import stats as ST
from .common import Verdict, config_networks, replica_list

SOURCE = ("Nguyen, Mondelli, Montufar, Tight bounds on the smallest eigenvalue of the neural tangent kernel for deep "
          "ReLU networks (ICML 2021, arXiv 2012.11654)")
DATA = ["model.L=2", "model.d=8", "model.activation=relu", "data.teacher.d_in=8", "data.teacher.inputs=sphere",
        "data.teacher.d_out=1", "data.n_test=1"]
SIZES = {
    "default": dict(N=[16, 32, 64, 128, 256], seeds=8, below=3, above=4),
    "quick": dict(N=[8, 16, 32], seeds=4, below=2, above=3),
}


def relu_limit_kernel(x: torch.Tensor, d: int, scale_u: float = 1.0, scale_w: float = 1.0,
                      scale_b: float = 1.0) -> torch.Tensor:
    """K_inf of a ReLU mean-field ResNet with one output on the embedded inputs x: (n, d) -> (n, n) (module doc)."""
    S = scale_w**2 * x @ x.T / d + scale_b**2
    s = S.diagonal().sqrt()
    cos = (S / (s[:, None] * s[None, :])).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    e_relu = s[:, None] * s[None, :] / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * cos)
    e_step = (math.pi - theta) / (2 * math.pi)
    return e_relu + scale_u**2 * e_step * (x @ x.T + 1.0)


def half_width(widths, ratios) -> float:
    """The width from which ratio >= 1/2 at every larger width of the grid, interpolated in log M between it and
    the width before (NaN when the grid starts above 1/2, inf when it never gets there)."""
    r = np.asarray(ratios, float)
    above = [k for k in range(len(r)) if (r[k:] >= 0.5).all()]
    if not above:
        return math.inf
    k = above[0]
    if k == 0:
        return math.nan
    return float(math.exp(np.interp(0.5, [r[k - 1], r[k]], np.log([widths[k - 1], widths[k]]))))


def ratios_for(N: int, widths, seeds) -> np.ndarray:
    """lambda_min(K_M) / lambda_min(K_inf) per seed and width: (S, len(widths))."""
    out = []
    for M in widths:
        nets, data = config_networks([*DATA, f"data.n_train={N}", f"model.M={M}"], replica_list(seed=seeds))
        x = data.x_train
        limit = float(torch.linalg.eigvalsh(relu_limit_kernel(nets[0].embed(x), nets[0].d))[0])
        out.append([float(torch.linalg.eigvalsh(tangent_kernel(net, x))[0]) / limit for net in nets])
    return np.array(out).T


def run(where: Path, quick: bool = False, seeds: Optional[int] = None):
    size = SIZES["quick" if quick else "default"]
    S = seeds or size["seeds"]
    rows, curves = [], {}
    for N in size["N"]:
        k = int(round(math.log2(N)))
        widths = [2**j for j in range(max(k - size["below"], 0), k + size["above"] + 1)]
        R = ratios_for(N, widths, range(S))
        curves[N] = (widths, R)
        rows += [dict(N=N, M=M, seed=s, ratio=R[s, j]) for s in range(S) for j, M in enumerate(widths)]
    table = pd.DataFrame(rows)
    halves = pd.DataFrame([dict(N=N, seed=s, M_half=half_width(w, R[s])) for N, (w, R) in curves.items()
                           for s in range(S)])
    ok = halves[np.isfinite(halves.M_half)]
    fit = ST.power_law_fit(ok.N, ok.M_half)
    passed = fit.alpha_lo <= 1.0 <= fit.alpha_hi
    top = {N: float(np.median(R[:, -1])) for N, (w, R) in curves.items()}
    verdict = Verdict(
        name="ntk_lambda_min", source=SOURCE,
        claim=("lambda_min of the tangent kernel at init reaches half of its infinite-width limit lambda_min(K_inf) > 0 "
               "at a width M_half proportional to N: log M_half = alpha log N + c with alpha = 1 (PASS: 1 lies in the "
               "t-interval of alpha over every (N, seed))"),
        quantity="exponent alpha of M_half in N", value=fit.alpha, lo=fit.alpha_lo, hi=fit.alpha_hi,
        claimed="1 (M_half ~ N)", passed=passed,
        answer=("median lambda_min(K_M) / lambda_min(K_inf) at M = 16 N: " + ", ".join(f"N={N}: {v:.2f}" for N, v in
                                                                                  top.items())
                + f"; {len(halves) - len(ok)} of {len(halves)} seeds without a crossing on the grid"),
        note="" if passed else "the width needed grows faster or slower than N at these sizes",
        sizes={"N": size["N"], "L": 2, "d": 8, "M": "N/8 .. 16 N" if not quick else "N/4 .. 8 N",
               "activation": "relu", "inputs": "unit sphere of R^8"}, seeds=S)
    return verdict, table, figure(curves, ok, fit)


def figure(curves, halves, fit):
    fig, (ax, bx) = FG.panels(2)
    for (N, (widths, R)), c in zip(curves.items(), FG.palette(len(curves))):
        FG.seeds_band(ax, np.asarray(widths) / N, R, c, f"$N$ = {N}")
    ax.axhline(0.5, color="0.4", ls=":", lw=1)
    ax.axhline(1.0, color="black", ls="--", lw=1, label=r"infinite width: $\lambda_{\min}(K_\infty)$")
    FG.finish(ax, "$M / N$", r"$\lambda_{\min}(K_M) / \lambda_{\min}(K_\infty)$", "smallest eigenvalue against width",
              logy=False)
    med = halves.groupby("N").M_half.median()
    bx.plot(halves.N, halves.M_half, "o", color="tab:blue", alpha=0.35, label="$M_{1/2}$ per seed")
    bx.plot(med.index, med.values, "s", color="tab:blue", label="median over seeds")
    FG.fitted_power_law(bx, halves.N, halves.M_half, ST.Interval(fit.alpha, fit.alpha_lo, fit.alpha_hi), "tab:blue",
                        "fitted", "N")
    FG.reference_power_law(bx, med.index, float(med.iloc[0]), 1.0, r"claim: $M_{1/2} \propto N$")
    FG.finish(bx, "$N$", "$M_{1/2}$", "width where it reaches half its limit", logy=True, ticks=list(med.index))
    return fig
