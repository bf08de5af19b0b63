"""The discretization gap of a deep ResNet to its ODE limit shrinks like 1/L for smooth initializations (Sander, Ablin,
Peyre, "Do Residual Neural Networks discretize Neural Ordinary Differential Equations?", NeurIPS 2022).

Their form: when the weights of layer l are theta(l / L) for a smooth (Lipschitz) theta(s), the ResNet
x_{l+1} = x_l + (1/L) f(x_l, theta(l / L)) is the explicit Euler scheme of dx/ds = f(x, theta(s)), and its output
differs from the ODE's by O(1/L) at initialization.

Here f(x, theta) = (1/M) sum_m u_m sigma(w_m . x + b_m), the mean-field residual. Two smooth profiles of particles:
`shared` (init.scheme=shared: the same M particles in every layer, theta(s) = theta_a) and `smooth`, theta(s) =
cos(pi s / 2) theta_a + sin(pi s / 2) theta_b between two iid draws (every layer's particles keep the law of init).
The ODE's solution X(1) comes from classical RK4 with many steps; the gap is ||X_L - X(1)|| / ||X(1) - X(0)|| averaged
over the inputs. Per seed its exponent in L is fitted with the next two orders of the Euler error's expansion
(gap = C L^p (1 + D_1 / L + D_2 / L^2)) and the exponents get a t-interval over seeds, widened by the expansion's
truncation error (stats.expansion_exponent: the gap is deterministic given the draw, so the seeds' spread alone is
far below the bias of a truncated fit).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from ..model.activations import ACTIVATION_FUNCTIONS
from ..model.euler import euler_flow
from ..model.particles import init_particles
from . import figures as FG
from . import stats as ST
from .common import Verdict
from .depth_scaling import inputs

SOURCE = ("Sander, Ablin, Peyre, Do Residual Neural Networks discretize Neural Ordinary Differential Equations? "
          "(NeurIPS 2022, arXiv 2205.14612)")
SIZES = {
    "default": dict(L=[8, 16, 32, 64, 128, 256, 512, 1024], M=32, d=8, n=16, seeds=10, scale_u=3.0, rk4_steps=4096),
    "quick": dict(L=[8, 16, 32, 64, 128, 256], M=16, d=8, n=8, seeds=4, scale_u=3.0, rk4_steps=1024),
}


def draws(seeds, M: int, d: int, scale_u: float):
    """theta_a and theta_b of each seed stacked: {u, w: (R, M, d), b: (R, M)} twice (init_particles with L = 1)."""
    def stack(offset):
        ps = [init_particles(1, M, d, scale_u=scale_u, seed=s + offset, dtype=torch.float64) for s in seeds]
        return {k: torch.stack([p[k][0] for p in ps]) for k in "uwb"}
    return stack(0), stack(1_000_003)


def particles_at(a: dict, b: dict, s: torch.Tensor, profile: str) -> dict:
    """theta(s) at the depths s: (K,) -> {u, w: (R, K, M, d), b: (R, K, M)}."""
    if profile == "shared":
        return {k: v[:, None].expand(v.shape[0], len(s), *v.shape[1:]) for k, v in a.items()}
    s = s.to(torch.float64)
    c, z = torch.cos(math.pi * s / 2), torch.sin(math.pi * s / 2)
    at = lambda t, k: t.view(1, -1, *[1] * (a[k].dim() - 1))  # (K,) against (R, K, M[, d])
    return {k: a[k][:, None] * at(c, k) + b[k][:, None] * at(z, k) for k in a}


def resnet_output(a, b, x0: torch.Tensor, L: int, profile: str, activation: str = "tanh") -> torch.Tensor:
    """X_L of the ResNet whose layer l holds theta(l / L): x0 (n, d) -> (R, n, d)."""
    p = particles_at(a, b, torch.arange(L, dtype=torch.float64) / L, profile)
    R = p["u"].shape[0]
    with torch.no_grad():
        return euler_flow(x0.expand(R, -1, -1), p["u"], p["w"], p["b"], activation)[-1]


def ode_output(a, b, x0: torch.Tensor, profile: str, steps: int, activation: str = "tanh") -> torch.Tensor:
    """X(1) of dX/ds = (1/M) sum_m u_m(s) sigma(w_m(s) . X + b_m(s)) by classical RK4 with `steps` steps:
    x0 (n, d) -> (R, n, d)."""
    sigma = ACTIVATION_FUNCTIONS[activation]
    R, M = a["u"].shape[:2]

    def field(s: float, X):
        p = particles_at(a, b, torch.tensor([s], dtype=torch.float64), profile)
        u, w, bias = p["u"][:, 0], p["w"][:, 0], p["b"][:, 0]
        return sigma(X @ w.transpose(1, 2) + bias[:, None, :]) @ u / M

    X, h = x0.expand(R, -1, -1).clone(), 1.0 / steps
    for k in range(steps):
        s = k * h
        k1 = field(s, X)
        k2 = field(s + h / 2, X + h / 2 * k1)
        k3 = field(s + h / 2, X + h / 2 * k2)
        k4 = field(s + h, X + h * k3)
        X = X + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return X


def relative_gap(XL, X1, x0) -> np.ndarray:
    """||X_L - X(1)|| / ||X(1) - X(0)|| averaged over inputs: (R,)."""
    return ((XL - X1).norm(dim=-1) / (X1 - x0).norm(dim=-1)).mean(-1).numpy()


def gap_exponent(Ls, gaps: np.ndarray) -> ST.Interval:
    """The exponent p of gap = C L^p (1 + D_1 / L + D_2 / L^2) over seeds (stats.expansion_exponent in h = 1/L):
    gaps (S, K)."""
    iv = ST.expansion_exponent(1.0 / np.asarray(Ls, float), gaps, order=2)
    return ST.Interval(-iv.value, -iv.hi, -iv.lo, iv.level)


def run(where: Path, quick: bool = False, seeds: Optional[int] = None, profile: str = "smooth"):
    size = SIZES["quick" if quick else "default"]
    S, Ls = seeds or size["seeds"], size["L"]
    a, b = draws(range(S), size["M"], size["d"], size["scale_u"])
    x0 = inputs(size["n"], size["d"])
    X1 = ode_output(a, b, x0, profile, size["rk4_steps"])
    gaps = np.stack([relative_gap(resnet_output(a, b, x0, L, profile), X1, x0) for L in Ls], 1)  # (S, K)
    iv = gap_exponent(Ls, gaps)
    passed = iv.contains(-1.0)
    shape = "theta(s) = theta_a in every layer" if profile == "shared" else \
        "theta(s) = cos(pi s/2) theta_a + sin(pi s/2) theta_b"
    verdict = Verdict(
        name=f"ode_gap_{profile}", source=SOURCE,
        claim=(f"for layers drawn from a smooth profile ({shape}), the relative gap ||X_L - X(1)|| / ||X(1) - X(0)|| "
               "between the ResNet and its ODE limit at initialization is C L^p (1 + O(1/L)) with p = -1, p fitted with the "
               "1/L and 1/L^2 terms of the Euler expansion (PASS: -1 "
               "lies in the t-interval over seeds of the per-seed exponents, widened by the truncation error)"),
        quantity="exponent of the gap in L", value=iv.value, lo=iv.lo, hi=iv.hi, claimed="-1 (gap ~ 1/L)",
        passed=passed, answer=f"median gap {np.median(gaps[:, 0]):.3g} at L = {Ls[0]}, {np.median(gaps[:, -1]):.3g} at "
                              f"L = {Ls[-1]}",
        note="" if passed else "the fitted exponent differs from -1 beyond the seeds' spread and the truncation error",
        sizes={"L": Ls, "M": size["M"], "d": size["d"], "inputs": size["n"], "scale_u": size["scale_u"],
               "rk4_steps": size["rk4_steps"], "activation": "tanh"}, seeds=S)
    table = pd.DataFrame([dict(seed=s, L=L, gap=gaps[s, k]) for s in range(S) for k, L in enumerate(Ls)])
    fig, (ax,) = FG.panels(1, 6.0, 4.5)
    mid = FG.seeds_band(ax, Ls, gaps, "tab:blue", "ResNet against its ODE limit (median, 10-90 % of seeds)")
    FG.fitted_power_law(ax, Ls, mid, iv, "tab:blue", "fitted", "L")
    FG.reference_power_law(ax, Ls, mid[0], -1.0, r"theory: $L^{-1}$")
    FG.finish(ax, "$L$", r"$\|X_L - X(1)\| / \|X(1) - X(0)\|$", f"{profile} profile: discretization gap at init",
              logy=True, ticks=Ls)
    return verdict, table, fig
