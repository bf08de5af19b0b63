"""The depth-scaling phase change at initialization (Marion, Fermanian, Biau, Vert, "Scaling ResNets in the large-depth
regime"; PierreMarion23/scaling-resnets, experiment_scaling_initialization.py).

Their form: h_{k+1} = h_k + alpha_L V_k sigma(W_k h_k), alpha_L = L^-beta, and the ratio ||h_L - h_0|| / ||h_0|| over
depths L at initialization, for weights iid across layers and for weights smooth in depth. With iid layers the ratio
explodes for beta < 1/2 and vanishes for beta > 1/2; with smooth layers the boundary is beta = 1.

Here: the mean-field ResNet's residual is u sigma(w . x + b) / (L M); init.scale_u = L^(1 - beta) makes its scale
L^-beta. init.scheme=iid draws every layer independently, init.scheme=shared uses the same M particles in every layer
(constant in depth: smooth). The ratio is averaged over the inputs of each draw; its exponent e(beta) in L is fitted
over depths on the mean over seeds (with its next order in 1/L, the Euler discretization's), and the critical beta*
where e changes sign is the root of the line through (beta, e(beta)), bootstrapped over seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ..model.euler import euler_flow
from ..model.particles import init_particles
from . import figures as FG
from . import stats as ST
from .common import Verdict

SOURCE = ("Marion, Fermanian, Biau, Vert, Scaling ResNets in the large-depth regime (arXiv 2206.06929); "
          "PierreMarion23/scaling-resnets experiment_scaling_initialization.py")
CRITICAL = {"iid": 0.5, "shared": 1.0}
SIZES = {
    "default": dict(L=[16, 32, 64, 128, 256, 512, 1024], M=32, d=8, n=16, seeds=20, offsets=[-0.25, -0.125, 0, 0.125, 0.25]),
    "quick": dict(L=[16, 32, 64, 128, 256], M=16, d=8, n=8, seeds=6, offsets=[-0.25, 0, 0.25]),
}


def inputs(n: int, d: int, d_in: int = 4, seed: int = 12345) -> torch.Tensor:
    """h_0 = E x: n Gaussian inputs of R^d_in zero-padded to R^d (model.embedding=pad): (n, d), float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, d, dtype=torch.float64)
    x[:, :d_in] = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    return x


def hidden_state_difference(h0: torch.Tensor, L: int, M: int, betas, scheme: str, seed: int,
                            activation: str = "tanh") -> np.ndarray:
    """||h_L - h_0|| / ||h_0||, averaged over the inputs h0: (n, d), of one draw of the particles (seed) with
    init.scale_u = L^(1 - beta) for each beta: (len(betas),)."""
    p = init_particles(L, M, h0.shape[1], scheme=scheme, seed=seed, dtype=torch.float64)
    R = len(betas)
    scale = torch.tensor([L ** (1.0 - b) for b in betas], dtype=torch.float64).view(R, 1, 1, 1)
    with torch.no_grad():
        hL = euler_flow(h0.expand(R, -1, -1), p["u"][None] * scale, p["w"].expand(R, -1, -1, -1),
                        p["b"].expand(R, -1, -1), activation)[-1]
    return ((hL - h0).norm(dim=-1) / h0.norm(dim=-1)).mean(-1).numpy()


def exponents(L, ratios: np.ndarray) -> np.ndarray:
    """e(beta): the exponent in L of the mean over seeds of the ratio, per beta, with the next order of its
    discretization in 1/L (ratio = C L^e (1 + D / L), stats.exponent_with_correction). ratios: (S, B, K)."""
    mean = ratios.mean(0)
    h = 1.0 / np.asarray(L, float)
    return np.array([-ST.exponent_with_correction(h, mean[j]) for j in range(mean.shape[0])])


def critical_beta(L, betas, ratios: np.ndarray) -> float:
    """beta* where e(beta) crosses 0 (the root of the line through (beta, e(beta)))."""
    return ST.line_root(betas, exponents(L, ratios))


def run(where: Path, quick: bool = False, seeds: Optional[int] = None, scheme: str = "iid"):
    size = SIZES["quick" if quick else "default"]
    S = seeds or size["seeds"]
    betas = [CRITICAL[scheme] + o for o in size["offsets"]]
    Ls = size["L"]
    h0 = inputs(size["n"], size["d"])
    ratios = np.array([[hidden_state_difference(h0, L, size["M"], betas, scheme, s) for L in Ls] for s in range(S)])
    ratios = ratios.transpose(0, 2, 1)  # (S, B, K)
    flat = ratios.reshape(S, -1)
    shape = ratios.shape[1:]
    iv = ST.bootstrap(lambda Y: critical_beta(Ls, betas, Y.reshape(len(Y), *shape)), flat)
    e = exponents(Ls, ratios)
    passed = iv.contains(CRITICAL[scheme])
    layers = "iid across layers" if scheme == "iid" else "shared by every layer (constant in depth: smooth)"
    verdict = Verdict(
        name=f"depth_scaling_{scheme}", source=SOURCE,
        claim=(f"with particles {layers} and residual scale alpha_L = L^-beta, the exponent of ||h_L - h_0|| / ||h_0|| "
               f"in L changes sign at beta = {CRITICAL[scheme]:g} (PASS: {CRITICAL[scheme]:g} lies in the bootstrap "
               "interval of the root of e(beta))"),
        quantity="critical beta", value=iv.value, lo=iv.lo, hi=iv.hi, claimed=f"{CRITICAL[scheme]:g}", passed=passed,
        answer=f"e(beta) = {', '.join(f'{b:g}: {v:+.3f}' for b, v in zip(betas, e))}; slope de/dbeta = "
               f"{np.polyfit(betas, e, 1)[0]:.2f} (theory: -1)",
        note="" if passed else "the root lies outside the claimed value's interval: see the exponents per beta",
        sizes={"L": Ls, "M": size["M"], "d": size["d"], "inputs": size["n"], "betas": betas, "activation": "tanh"},
        seeds=S)
    table = pd.DataFrame([dict(seed=s, beta=b, L=L, ratio=ratios[s, j, k]) for s in range(S)
                          for j, b in enumerate(betas) for k, L in enumerate(Ls)])
    return verdict, table, figure(Ls, betas, ratios, e, iv, scheme)


def figure(Ls, betas, ratios, e, iv, scheme):
    fig, (ax, bx) = FG.panels(2)
    for j, (b, c) in enumerate(zip(betas, FG.palette(len(betas)))):
        FG.seeds_band(ax, Ls, ratios[:, j], c, fr"$\beta$ = {b:g}: slope {e[j]:+.2f}")
    FG.finish(ax, "$L$", r"$\|h_L - h_0\| / \|h_0\|$", f"{scheme} layers: ratio over depth (median, 10-90 % of seeds)",
              logy=True, ticks=Ls)
    bx.plot(betas, e, "o-", color="tab:blue", label=r"exponent $e(\beta)$ of the ratio in $L$")
    bx.axhline(0, color="0.5", lw=0.8)
    crit = CRITICAL[scheme]
    bx.plot(betas, [crit - b for b in betas], "--", color="black",
            label=fr"theory: ${'1' if scheme == 'shared' else '1/2'} - \beta$")
    bx.axvspan(iv.lo, iv.hi, color="tab:blue", alpha=0.15,
               label=fr"$\beta^*$ = {iv.value:.3f} [{iv.lo:.3f}, {iv.hi:.3f}] (95 %)")
    FG.finish(bx, r"$\beta$", r"$e(\beta)$", "where the exponent changes sign", logx=False, logy=False)
    return fig
