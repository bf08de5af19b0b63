"""A coordinate check over depth and width (mup's coord check, extended to depth as depth-muP / CompleteP do): the
per-layer sizes of activations, adjoints and particle velocities over an (L, M) grid, at initialization and after a
few steps, under the mean-field parameterization (residual 1/(L M), step dt L M: the COT flow) and under `standard`
(the same forward, step dt: its flow time per step is dt / (L M)).

Per job (one per (L, M, parameterization), seeds as replicas, k steps of dt), from the run's initial and final
networks on the training set, each an RMS per coordinate, taken at a fixed depth s so that the layer grid's own
O(1/L) offsets (a mean over layers l = 1..L of a quantity growing with l/L) do not enter:
  activation          x at s = 1 (the last state) at step k;
  activation change   x(k) - x(0) at s = 1, the features' movement mup's check watches;
  adjoint             n dRisk/dx at s = 0 at step k, the backward signal after crossing every layer;
  particle velocity   (theta(k) - theta(0)) / (k dt) over every particle, their speed per unit of the optimizer's dt.
log q = a log L + b log M + c is fitted per quantity and parameterization (t-intervals over every (L, M, seed)).

The form tested: under the mean-field scaling every quantity is flat, |a|, |b| <= 0.1 (a factor 2^0.1 = 1.07 per
doubling of L or M), while under `standard` the activation change and the particle velocity drift like 1/(L M)
(a, b <= -0.5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from ..api import load_run
from . import figures as FG
from . import stats as ST
from .common import Verdict, fresh_runs, replica_list, run_replicas

SOURCE = ("Yang, Hu et al., Tensor Programs V (mup) coord check; Bordelon et al. / Dey et al. (CompleteP): depth-muP; "
          "here the COT flow's 1/(L M) scaling")
QUANTITIES = ("activation", "activation_change", "adjoint", "particle_velocity")
DRIFTING = ("activation_change", "particle_velocity")
FLAT, DRIFT = 0.1, -0.5
SIZES = {
    "default": dict(L=[2, 8, 32], M=[16, 64, 256], seeds=8, n=32, dt=0.1, steps=4),
    "quick": dict(L=[2, 8], M=[8, 32], seeds=2, n=16, dt=0.1, steps=2),
}


def rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


def states_and_adjoints(net, x: torch.Tensor, y: torch.Tensor):
    """The states x_0..x_L of the Euler ResNet (x_{l+1} = x_l + F_l(x_l) / L) and the adjoints n dRisk/dx_l:
    two (L + 1, n, d) tensors."""
    states = [net.embed(x).requires_grad_(True)]
    for l in range(net.L):
        states.append(states[-1] + net.field(l, states[-1]) / net.L)
    risk = 0.5 * (net.read(states[-1]) - y).pow(2).sum(-1).mean()
    grads = torch.autograd.grad(risk, states)
    return torch.stack(states).detach(), torch.stack(grads) * x.shape[0]


def layer_sizes(run, steps: int, dt: float) -> dict:
    """The four quantities of one run (module doc)."""
    x, y = run.data.x_train.double(), run.data.y_train.double()
    init, final = run.init.detached(dtype="float64"), run.final.detached(dtype="float64")
    X0, _ = states_and_adjoints(init, x, y)
    X, P = states_and_adjoints(final, x, y)
    move = torch.cat([(final.u - init.u), (final.w - init.w), (final.b - init.b)[..., None]], -1).detach()
    return {"activation": rms(X[-1]), "activation_change": rms(X[-1] - X0[-1]), "adjoint": rms(P[0]),
            "particle_velocity": rms(move) / (steps * dt)}


def exponents(table: pd.DataFrame, parameterization: str) -> dict:
    """Per quantity: the Intervals of (a, b) in log q = a log L + b log M + c."""
    mine = table[table.parameterization == parameterization]
    return {q: ST.loglinear_fit(mine[["L", "M"]].to_numpy(), mine[q]) for q in QUANTITIES}


def run(where: Path, quick: bool = False, seeds: Optional[int] = None):
    size = SIZES["quick" if quick else "default"]
    S = seeds or size["seeds"]
    runs = fresh_runs(where)
    rows = []
    for param in ("mean_field", "standard"):
        for L in size["L"]:
            for M in size["M"]:
                summaries = run_replicas(runs / f"{param},L={L},M={M}", [
                    f"model.L={L}", f"model.M={M}", f"data.n_train={size['n']}", "data.n_test=8", "model.dtype=float64",
                    f"optim.parameterization={param}", f"optim.dt={size['dt']}", f"trainer.max_steps={size['steps']}",
                    "trainer.log_every=1"], replica_list(seed=range(S)))
                rows += [dict(parameterization=param, L=L, M=M, seed=s,
                              **layer_sizes(load_run(sm["run_dir"]), size["steps"], size["dt"]))
                         for s, sm in enumerate(summaries)]
    table = pd.DataFrame(rows)
    fits = {p: exponents(table, p) for p in ("mean_field", "standard")}
    cot = [(f"{q} in {axis}", iv) for q, ivs in fits["mean_field"].items() for axis, iv in zip("LM", ivs)]
    name, worst = max(cot, key=lambda item: max(abs(item[1].lo), abs(item[1].hi)))
    flat = all(iv.within(-FLAT, FLAT) for _, iv in cot)
    drift = all(iv.hi <= DRIFT for q in DRIFTING for iv in fits["standard"][q])
    describe = lambda p: "; ".join(f"{q}: L^{a.value:+.2f} M^{b.value:+.2f}" for q, (a, b) in fits[p].items())
    verdict = Verdict(
        name="coord_check", source=SOURCE,
        claim=(f"every per-layer size (activation, activation change after {size['steps']} steps, adjoint, particle "
               f"velocity) is flat in L and M under the mean-field scaling: the t-intervals of its exponents lie in "
               f"[-{FLAT}, {FLAT}]; under `standard` the activation change and the particle velocity drift: their "
               f"exponents' intervals lie below {DRIFT} (PASS: both)"),
        quantity=f"widest COT exponent ({name})", value=worst.value, lo=worst.lo, hi=worst.hi,
        claimed=f"|exponent| <= {FLAT} (standard: <= {DRIFT})", passed=flat and drift,
        answer=f"mean_field: {describe('mean_field')}. standard: {describe('standard')}",
        note="" if flat and drift else ("" if flat else f"a COT size drifts beyond the tolerance at these sizes ({name}: "
                                        f"{2 ** worst.value:.3f}x per doubling, against {2 ** -1:.2f}x under standard's "
                                        "1/(L M)); equal exponents in L and in M point to a correction in L M, the "
                                        "finite number of particles; ")
        + ("" if drift else "a standard size does not drift as 1/(L M)"),
        sizes={"L": size["L"], "M": size["M"], "n": size["n"], "dt": size["dt"], "steps": size["steps"]}, seeds=S)
    return verdict, table, figure(table, size, fits)


def figure(table: pd.DataFrame, size: dict, fits):
    fig, axes = FG.panels(4, 4.2, 4.0)
    styles = {"mean_field": ("-", "o"), "standard": (":", "s")}
    colours = dict(zip(size["M"], FG.palette(len(size["M"]))))
    for ax, q in zip(axes, QUANTITIES):
        cot = table[table.parameterization == "mean_field"].groupby("L")[q].median()
        ax.axhline(float(cot.median()), color="black", ls="--", lw=0.8, label="flat (the COT claim)")
        if q in DRIFTING:
            first = table[(table.parameterization == "standard") & (table.M == size["M"][0])].groupby("L")[q].median()
            FG.reference_power_law(ax, size["L"], float(first.iloc[0]), -1.0, r"$1/(LM)$ (standard's drift)", "0.4")
        for param, (ls, marker) in styles.items():
            for M in size["M"]:
                mine = table[(table.parameterization == param) & (table.M == M)].groupby("L")[q].median()
                ax.plot(mine.index, mine.values, ls=ls, marker=marker, color=colours[M],
                        label=f"{param.replace('_', '-')}, $M$ = {M}")
            a, b = fits[param][q]
            ax.plot([], [], ls=ls, color="black", label=f"{param.replace('_', '-')}: $L^{{{a.value:+.2f}}}"
                                                         f" M^{{{b.value:+.2f}}}$")
        FG.finish(ax, "$L$", q.replace("_", " ") + " (RMS per coordinate)", q.replace("_", " "), logy=True,
                  ticks=size["L"])
        lo, hi = table[q].min(), table[q].max()
        if hi < 10 * lo:  # a flat quantity: show it against a decade each side, not zoomed into its noise
            ax.set_ylim(lo / 10, hi * 10)
        ax.legend(fontsize=5.5)
    return fig
