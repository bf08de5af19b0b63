"""Open question 1 of the paper: ReLU against smooth activations. The theory's well-posedness (existence, uniqueness and
stability of the flow) needs a smooth sigma; with ReLU the velocity field jumps where a pre-activation changes sign,
and uniqueness is not guaranteed. Its measurable symptom: the trajectory's sensitivity to a tiny perturbation of the
initial particles.

Method: for each seed, the initial particles theta_0 and theta_0 + eps xi (xi standard Gaussian on every coordinate,
eps over a grid down to 1e-10) are trained by the same flow (float64, full batch, the plain loop of common.py, which
is run_job's trajectory). The amplification A(eps) = sup_t ||theta_t - theta'_t|| / ||theta_0 - theta'_0|| (the
identity coupling's COT distance: particles keep their labels) is read at every step, and each seed's worst A over
the eps grid is kept. A flow map with Lipschitz constant Lip has A <= Lip for every eps; a flow map that jumps has A
growing like jump / eps wherever a kink is crossed. Sizes: a depth series at fixed M and a width series at fixed L;
the median over seeds of the worst A is fitted as a power of L and of M per activation (bootstrap over seeds).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from . import figures as FG
from . import stats as ST
from .common import Verdict, config_networks, flat_particles, gradient_descent, replica_list

SOURCE = ("Barboni, Peyre, Vialard (arXiv 2403.12887), open question 1: well-posedness needs a smooth activation; "
          "does ReLU's flow lose uniqueness?")
ACTIVATIONS = ("tanh", "relu")
SIZES = {
    "default": dict(depths=[2, 4, 8, 16], M=32, widths=[16, 32, 64, 128], L=4, eps=[1e-4, 1e-6, 1e-8, 1e-10],
                    seeds=10, n=32, dt=0.1, steps=300),
    "quick": dict(depths=[2, 4, 8], M=16, widths=[8, 16, 32], L=2, eps=[1e-5, 1e-8], seeds=3, n=16, dt=0.1, steps=100),
}


def perturbed(nets, eps_grid, seed: int):
    """For each network, itself followed by one copy per eps with theta + eps xi (xi ~ N(0, I), seeded): the list
    [net_0, net_0 + eps_1 xi_0, ..., net_1, ...] of len(nets) (1 + len(eps_grid)) networks."""
    out = []
    for r, net in enumerate(nets):
        g = torch.Generator().manual_seed(seed * 7919 + r)
        xi = {k: torch.randn(getattr(net, k).shape, generator=g, dtype=torch.float64) for k in "uwb"}
        out.append(net)
        for eps in eps_grid:
            copy = net.detached()
            with torch.no_grad():
                for k in "uwb":
                    getattr(copy, k).add_(eps * xi[k])
            out.append(copy)
    return out


def amplification(trajectory_distances: np.ndarray) -> np.ndarray:
    """sup_t d_t / d_0 from the distances of each pair at every step: (steps + 1, P) -> (P,)."""
    return trajectory_distances.max(0) / trajectory_distances[0]


def worst_amplification(L: int, M: int, activation: str, size: dict, seeds: int) -> np.ndarray:
    """max over the eps grid of A(eps), per seed: (seeds,)."""
    overrides = [f"model.L={L}", f"model.M={M}", f"model.activation={activation}", f"data.n_train={size['n']}",
                 "data.n_test=1", f"optim.dt={size['dt']}"]
    nets, data = config_networks(overrides, replica_list(seed=range(seeds)))
    group = 1 + len(size["eps"])
    nets = perturbed(nets, size["eps"], L * 1000 + M)
    distances = []

    def observe(k, net):
        theta = flat_particles(net).view(seeds, group, -1)
        distances.append((theta[:, 1:] - theta[:, :1]).pow(2).mean(-1).sqrt().reshape(-1).numpy())

    gradient_descent(nets, data.x_train, data.y_train, [size["dt"]] * len(nets), size["steps"], observe=observe)
    return amplification(np.array(distances)).reshape(seeds, len(size["eps"])).max(1)


def size_exponent(sizes, A: np.ndarray) -> ST.Interval:
    """The exponent of the median over seeds of A in the size, bootstrapped over seeds. A: (S, K)."""
    return ST.bootstrap(lambda Y: ST.loglog_slope(sizes, np.median(Y, 0)), A)


def run(where: Path, quick: bool = False, seeds: Optional[int] = None):
    size = SIZES["quick" if quick else "default"]
    S = seeds or size["seeds"]
    series = {"L": [(L, size["M"]) for L in size["depths"]], "M": [(size["L"], M) for M in size["widths"]]}
    A = {(act, axis): np.stack([worst_amplification(L, M, act, size, S) for L, M in shapes], 1)
         for act in ACTIVATIONS for axis, shapes in series.items()}
    fits = {key: size_exponent([s[0 if key[1] == "L" else 1] for s in series[key[1]]], v) for key, v in A.items()}
    tanh_flat = fits[("tanh", "L")].contains(0.0) and fits[("tanh", "M")].contains(0.0)
    relu_top, tanh_top = np.median(A[("relu", "M")][:, -1]), np.median(A[("tanh", "M")][:, -1])
    ratio = ST.bootstrap(lambda Y: np.median(Y[:, 0]) / np.median(Y[:, 1]),
                         np.column_stack([A[("relu", "L")][:, -1], A[("tanh", "L")][:, -1]]))
    verdict = Verdict(
        name="relu_vs_smooth", source=SOURCE,
        claim=("a smooth activation (tanh) gives a Lipschitz flow map whose constant does not grow with depth or "
               "width: the median worst amplification of a perturbation of the initial particles has exponent 0 in L "
               "and in M (PASS: 0 in both bootstrap intervals); the line's quantity is ReLU's amplification over "
               "tanh's at the deepest size (> 1: the symptom of a non-Lipschitz, possibly non-unique, ReLU flow)"),
        quantity=f"relu/tanh amplification at L={series['L'][-1][0]}", value=ratio.value, lo=ratio.lo, hi=ratio.hi,
        claimed="tanh exponents 0 in L and M", passed=tanh_flat,
        answer=(f"ReLU amplifies a perturbation of the initial particles up to {relu_top:.3g}x (median over seeds, "
                f"M = {series['M'][-1][1]}) against {tanh_top:.3g}x for tanh; exponents (median worst amplification): "
                + "; ".join(f"{act} in {axis}: {fits[(act, axis)].value:+.2f} [{fits[(act, axis)].lo:+.2f}, "
                            f"{fits[(act, axis)].hi:+.2f}]" for act, axis in fits)),
        note="" if tanh_flat else "tanh's amplification drifts with size at these sizes",
        sizes={"depth_series": series["L"], "width_series": series["M"], "eps": size["eps"], "n": size["n"],
               "dt": size["dt"], "flow_time": size["dt"] * size["steps"]}, seeds=S)
    table = pd.DataFrame([dict(activation=act, series=axis, L=shape[0], M=shape[1], seed=s, worst_amplification=v[s, k])
                          for (act, axis), v in A.items() for k, shape in enumerate(series[axis]) for s in range(S)])
    return verdict, table, figure(series, A, fits)


def figure(series, A, fits):
    fig, axes = FG.panels(2)
    for ax, axis in zip(axes, ("L", "M")):
        x = [s[0 if axis == "L" else 1] for s in series[axis]]
        for act, c in zip(ACTIVATIONS, ("tab:blue", "tab:red")):
            mid = FG.seeds_band(ax, x, A[(act, axis)], c, f"{act}: worst amplification (median, 10-90 %)")
            FG.fitted_power_law(ax, x, mid, fits[(act, axis)], c, f"{act} fit", axis)
        ax.axhline(1.0, color="black", ls="--", lw=1, label="no amplification (1)")
        fixed = f"$M$ = {series['L'][0][1]}" if axis == "L" else f"$L$ = {series['M'][0][0]}"
        FG.finish(ax, f"${axis}$", r"$\sup_t \|\theta_t - \theta'_t\| / \|\theta_0 - \theta'_0\|$",
                  f"sensitivity to the initial particles ({fixed})", logy=True, ticks=x)
    return fig
