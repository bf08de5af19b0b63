"""Depth-mobile particles (model/depth.py) integrated with fixed steps as one autograd node: Euler, or
torchdiffeq's rk4 (its 3/8 rule), on torchdiffeq's grid of T = L * substeps uniform steps over [0, 1].

Stage q of step i evaluates the field at one time t_iq; with c_iq,j = dt_i k_h(t_iq, s_j) / J (all stages'
weights from one batched kernel call) and K_q = dt_i F(t_iq, Y_q) the stage's increment,
    Z = Y_q w^T + b,  H = sigma(Z),  K_q = H (c_iq u),    Y_q = y_i + sum_{r<q} a_qr K_r,  y_{i+1} = y_i + sum_q b_q K_q.
Sorted by depth, the particles whose weight at t is not zero form one contiguous range (the kernel's support
about t and its mirror images about 0 and 1 cover one interval of depths): a stage multiplies that range only.
Backward, from g = dRisk/dy_{i+1} and the stages in reverse (G_q = dRisk/dK_q, Gy_q = dRisk/dY_q):
    G_q = b_q g + sum_{p>q} a_pq Gy_p,  dZ = (G_q (c_iq u)^T) * sigma'(Z),  Gy_q = dZ w,  dRisk/dy_i = g + sum_q Gy_q,
    dRisk/dw += dZ^T Y_q,  dRisk/db += sum_n dZ,  P_iq = H^T G_q: (J, d),
    dRisk/du_j = sum_iq c_iq,j P_iq,j,  dRisk/ds_j = sum_iq (dt_i / J) dk_h(t_iq, s_j)/ds_j (u_j . P_iq,j).
Inside the node the particles are transposed, u^T, w^T: (d, J): every per-stage product then reads or
writes rows of J contiguous numbers (on a CPU 1.4-6x faster than the (J, d) layout at J = 2048, d = 8).
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .activations import ACTIVATION_FUNCTIONS, ACTIVATION_VJP
from .depth_kernels import fold_depth, reflected_kernel, reflected_kernel_and_slope


class Tableau(NamedTuple):
    """An explicit Runge-Kutta method: stage times c, stage coefficients a (row q: a_q0 .. a_q,q-1), weights b."""

    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]


# torchdiffeq's fixed-grid methods, stage for stage (its rk4 is the 3/8 rule, rk4_alt_step_func)
TABLEAUX = {"euler": Tableau((0.0,), ((),), (1.0,)),
            "rk4": Tableau((0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                           (1 / 8, 3 / 8, 3 / 8, 1 / 8))}
# the activations whose backward reads sigma(Z) (ACTIVATION_VJP): applied in place where Z was kept
_IN_PLACE = {"tanh": torch.Tensor.tanh_, "relu": torch.Tensor.relu_}

Ranges = Optional[List[Tuple[int, int]]]  # per stage, the particles [lo, hi) it multiplies; None: all of them


@functools.lru_cache(maxsize=16)
def stage_times(steps: int, method: str, dtype=torch.float64, device=None) -> Tuple[Tensor, Tensor]:
    """(t_iq, dt_i) of every stage of `method`, step-major: (steps * stages,) each, on torchdiffeq's grid
    linspace(0, 1, steps + 1) and its stage times t_i + c_q dt_i (c_q = 1: t_{i+1} itself). Cached: every
    forward of a network asks for the same grid (never written to)."""
    tableau = TABLEAUX[method]
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=dtype, device=device)
    t0, t1 = grid[:-1], grid[1:]
    dt = t1 - t0
    times = torch.stack([t0 if c == 0 else t1 if c == 1 else t0 + dt * c for c in tableau.c], 1)
    return times.reshape(-1), dt.repeat_interleave(len(tableau.c))


def active_ranges(active: Tensor) -> List[Tuple[int, int]]:
    """Per row of active: (stages, J) bool, particles sorted by depth, the range [lo, hi) from its first to
    its last True ((0, 0) if none): one host sync. A zero inside a range (none in exact arithmetic) adds 0."""
    J = active.shape[1]
    first = active.int().argmax(1)
    last = J - active.flip(1).int().argmax(1)
    any_ = active.any(1)
    return list(zip(torch.where(any_, first, 0).tolist(), torch.where(any_, last, 0).tolist()))


def _combine(terms) -> Optional[Tensor]:
    """sum coef * t over (coef, t) with coef != 0 and t not None; a single unit coefficient returns t itself."""
    out = None
    for coef, t in terms:
        if coef == 0 or t is None:
            continue
        out = (t if coef == 1 else t * coef) if out is None else out.add(t, alpha=coef)
    return out


def _per_stage(t: Tensor, ranges: Ranges, n: int, stacked: bool) -> List[Tensor]:
    """For each of n stages, the columns [lo, hi) of t (its particles): of t[j] if t is stacked by stage
    (n, ..., J), else of t (..., J) itself. Views."""
    if ranges is None:
        return list(t.unbind(0)) if stacked else [t] * n
    return [(t[j] if stacked else t)[..., lo:hi] for j, (lo, hi) in enumerate(ranges)]


def _kept_views(kept: Tensor, N: int, ranges: Ranges, n: int) -> List[Tensor]:
    """Stage j's (N, hi - lo) block of the flat buffer `kept`, stage after stage."""
    if ranges is None:
        return list(kept.view(n, N, -1).unbind(0))
    starts = itertools.accumulate((N * (hi - lo) for lo, hi in ranges), initial=0)
    return [kept[a:a + N * (hi - lo)].view(N, hi - lo) for a, (lo, hi) in zip(starts, ranges)]


def integrate(X0: Tensor, wT: Tensor, b: Tensor, cuT: Tensor, ranges: Ranges, tableau: Tableau, name: str):
    """The forward: (X_T: (N, d), the stage inputs Y: (stages, N, d), the flat buffer of what sigma's backward
    reads, sigma(Z) or Z of each stage (N, hi - lo) in turn; (stages, N, J) with ranges None).
    X0: (N, d); wT: (d, J); b: (J,); cuT: (stages, d, J), each stage's weighted u^T, c_iq,j u_j^T."""
    sigma, saves_output = ACTIVATION_FUNCTIONS[name], ACTIVATION_VJP[name][0]
    S, n, N = len(tableau.c), cuT.shape[0], X0.shape[0]
    width = n * wT.shape[1] if ranges is None else sum(hi - lo for lo, hi in ranges)
    kept = X0.new_empty(N * width)
    y, Ys, K = X0, [], []
    stages = zip(_per_stage(wT, ranges, n, False), _per_stage(b, ranges, n, False),
                 _per_stage(cuT, ranges, n, True), _kept_views(kept, N, ranges, n))
    for j, (wT_q, b_q, cuT_q, Z) in enumerate(stages):
        q = j % S
        Y = y if q == 0 else _combine([(1.0, y), *zip(tableau.a[q], K)])
        Ys.append(Y)
        torch.addmm(b_q, Y, wT_q, out=Z)
        H = _IN_PLACE[name](Z) if saves_output else sigma(Z)
        if S == 1:  # Euler: the step is one matmul into the state
            y = torch.addmm(y, H, cuT_q.t(), alpha=tableau.b[0])
            continue
        K.append(H @ cuT_q.t())
        if q == S - 1:
            y, K = _combine([(1.0, y), *zip(tableau.b, K)]), []
    return y, torch.stack(Ys), kept


def reverse_stages(g: Tensor, n: int, tableau: Tableau, stage_vjp: Callable) -> Tensor:
    """The backward's recursion over the n stages, last first (module doc): stage_vjp(j, G_j, acc) returns
    acc + dRisk/dY_j (acc None: 0) and does stage j's own work; returns dRisk/dX_0. Euler hands g itself as
    acc, so that dRisk/dy_i = g + dZ w is one matmul."""
    S = len(tableau.c)
    Gy: List[Optional[Tensor]] = [None] * S
    for j in reversed(range(n)):
        q = j % S
        if S == 1:
            g = stage_vjp(j, g, g)
            continue
        Gq = _combine([(tableau.b[q], g), *((tableau.a[p][q], Gy[p]) for p in range(q + 1, S))])
        Gy[q] = stage_vjp(j, Gq, None)
        if q == 0:
            g, Gy = _combine([(1.0, g), *((1.0, t) for t in Gy)]), [None] * S
    return g


class _FusedDepthFlow(torch.autograd.Function):
    """X_T of the depth-mobile field (module doc) as one autograd node, on particles u, w: (J, d),
    b, s: (J,). It keeps the stage inputs and one (N, active) tensor per stage; plain autograd through
    torchdiffeq keeps, per stage, sigma(Z), the weighted u and the kernel's graph, and accumulates each
    parameter's gradient once per stage. Besides the particles: c: (stages, J), the weights c_iq,j;
    dc: (stages, J), dc_iq,j/ds_j (None when the depths do not move); ranges; the tableau; sigma's name."""

    @staticmethod
    def forward(X0, u, w, b, s, c, dc, ranges, tableau, name):
        return integrate(X0, w.t().contiguous(), b, c[:, None, :] * u.t().contiguous(), ranges, tableau, name)

    @staticmethod
    def setup_context(ctx, inputs, output):
        X0, u, w, b, s, c, dc, ranges, tableau, name = inputs
        ctx.save_for_backward(u, w, c, dc, *output[1:])
        ctx.mark_non_differentiable(*output[1:])
        ctx.set_materialize_grads(False)
        ctx.ranges, ctx.tableau, ctx.name = ranges, tableau, name

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g, *unused):
        if g is None:
            return (None,) * 10
        u, w, c, dc, Ys, kept = ctx.saved_tensors
        ranges, (n, J), N = ctx.ranges, c.shape, Ys.shape[1]
        uT, wT = u.t().contiguous(), w.t().contiguous()
        saves_output, vjp = ACTIVATION_VJP[ctx.name]
        sigma = ACTIVATION_FUNCTIONS[ctx.name]
        cuT = c[:, None, :] * uT
        # the stage inputs with a column of ones: [dRisk/dw, dRisk/db]^T += [Y, 1]^T dZ is one product
        Y1T = torch.cat([Ys, Ys.new_ones(n, N, 1)], 2).transpose(1, 2)
        gwbT = wT.new_zeros(wT.shape[0] + 1, J)
        Gs: List[Tensor] = [None] * n
        PT = None if ranges is None else torch.zeros_like(cuT)  # P_iq^T = G_q^T H, zero outside the range
        PTs = None if PT is None else _per_stage(PT, ranges, n, True)
        stages = list(zip(_per_stage(wT, ranges, n, False), _per_stage(cuT, ranges, n, True),
                          _per_stage(gwbT, ranges, n, False), _kept_views(kept, N, ranges, n), Y1T.unbind(0)))

        def stage_vjp(j: int, Gq: Tensor, acc: Optional[Tensor]) -> Tensor:
            wT_q, cuT_q, gwbT_q, kept_q, Y1T_q = stages[j]
            dZ = vjp(Gq @ cuT_q, kept_q)
            gwbT_q.addmm_(Y1T_q, dZ)
            if PTs is None:
                Gs[j] = Gq
            else:  # stages of different widths: P one stage at a time
                torch.mm(Gq.t(), kept_q if saves_output else sigma(kept_q), out=PTs[j])
            return dZ @ wT_q.t() if acc is None else torch.addmm(acc, dZ, wT_q.t())

        g = reverse_stages(g, n, ctx.tableau, stage_vjp)
        if PT is None:  # every stage multiplies all J particles: P of all stages in one batched product
            H = kept.view(n, N, J)
            PT = torch.bmm(torch.stack(Gs).transpose(1, 2), H if saves_output else sigma(H))
        gu = (c[:, None, :] * PT).sum(0).t().contiguous()
        gs = ((PT * uT).sum(1) * dc).sum(0) if ctx.needs_input_grad[4] else None
        return g, gu, gwbT[:-1].t().contiguous(), gwbT[-1], gs, *(None,) * 5


def depth_flow(X0: Tensor, u: Tensor, w: Tensor, b: Tensor, s: Tensor, h: float, kernel: str, name: str,
               steps: int, method: str) -> Tensor:
    """X(1) of the depth-mobile field by `steps` fixed steps of `method` (euler, rk4), one autograd node.

    X0: (N, d); u, w: (..., d) and b, s: (...) for J = u.numel() / d particles (e.g. (L, M, d), (L, M))
    -> (N, d). Where some weight is exactly zero (compact kernels, underflowed Gaussian tails) the
    particles are taken in depth order, and each stage multiplies its active range only.
    """
    d = X0.shape[-1]
    u, w, b, s = u.reshape(-1, d), w.reshape(-1, d), b.reshape(-1), s.reshape(-1)
    times, dt = stage_times(steps, method, X0.dtype, X0.device)
    scale = (dt / s.shape[0])[:, None]  # c = dt k_h / J
    moves = s.requires_grad and torch.is_grad_enabled()
    with torch.no_grad():  # dRisk/ds goes through the node's own dk_h/ds (backward), not through this graph
        if moves:
            k, dk = reflected_kernel_and_slope(times, s, h, kernel)
            c, dc = k * scale, dk * scale
        else:
            c, dc = reflected_kernel(times, s, h, kernel) * scale, None
    active = c != 0
    ranges = None
    if not bool(active.all()):  # a host sync per forward: the price of the sparsity
        order = torch.argsort(fold_depth(s.detach()))
        u, w, b, s, c = u[order], w[order], b[order], s[order], c[:, order]
        dc = dc[:, order] if dc is not None else None
        ranges = active_ranges(active[:, order])
    return _FusedDepthFlow.apply(X0, u, w, b, s, c, dc, ranges, TABLEAUX[method], name)[0]
