"""A mean-field ResNet whose particles also carry a depth s_j in [0, 1]: COT against Wasserstein.

Particle j = 1..J carries theta_j = (u_j, w_j, b_j), u_j, w_j in R^d, b_j in R, and a depth s_j. The field is
    F(s, x) = (1/J) sum_j k_h(s, s_j) u_j sigma(w_j . x + b_j),
k_h a smooth probability density of bandwidth h reflected at 0 and 1, so that int_0^1 k_h(s, s_j) ds = 1 for
every s_j: the depth marginal of mu is (1/J) sum_j k_h(., s_j). X(0) = E x, dX/ds = F(s, X), output R X(1).
    COT:         d theta_j/dt = -J dRisk/d theta_j,  d s_j/dt = 0
    Wasserstein: d theta_j/dt = -J dRisk/d theta_j,  d s_j/dt = -kappa J dRisk/d s_j
With s_j = (l + 1/2)/L (M particles per layer, J = L M) and a kernel supported inside its layer, the time
change tau(s) = int_0^s k_h(r, s_l) dr turns each bump into the layer's field (1/M) sum_m phi run for 1/L: the
exact solution is then the layered model's exact solution, for every such h and kernel shape.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace
from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from .activations import activation
from .depth_fused import TABLEAUX, depth_flow
from .depth_kernels import KERNELS, fold_depth, reflected_kernel
from .spec import NetworkSpec, SpecDims, check_shapes


def layer_grid_depths(L: int, M: int, dtype=torch.float64, device=None) -> Tensor:
    """s_j = (l + 1/2) / L for particle j = l M + m: (L M,)."""
    return ((torch.arange(L, dtype=dtype, device=device) + 0.5) / L).repeat_interleave(M)


class _DepthField(nn.Module):
    """F(s, x) as torchdiffeq wants it: f(t, y)."""

    def __init__(self, net: DepthMobileResNet):
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.net.field(t, x)


def with_grid_depths(particles: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Layered particles {u: (L, M, d), w, b} plus their depths on the layer grid, s: (L, M) = (l + 1/2)/L."""
    L, M = particles["b"].shape
    s = layer_grid_depths(L, M, particles["u"].dtype, particles["u"].device).reshape(L, M)
    return {**particles, "s": s}


class DepthMobileResNet(SpecDims, nn.Module):
    """X(0) = E x, dX/ds = (1/J) sum_j k_h(s, s_j) u_j sigma(w_j . X + b_j), output R X(1); J = L M.

    Built like the layered network from (particles, spec, embedding, readout): particles {s: (L, M),
    u, w: (L, M, d), b: (L, M)} keep their initial layer as an index (particle j = l M + m), while s moves
    freely under the Wasserstein flow. spec.depth_kernel names k, spec.bandwidth is h.
    Integrators: `euler` and `rk4` take L * spec.substeps uniform steps over [0, 1], as one autograd node
    with a hand-written backward (depth_fused.py), or with spec.backprop `autograd` as torchdiffeq's steps
    under plain autograd (the same forward to round-off: the node's reference). `dopri5` is adaptive
    (rtol, atol) and must land on a grid of spacing <= h, so that no bump is stepped over where the field
    is zero around it. Fixed steps must be well below h: a step longer than h can step over a compact bump
    entirely, and Euler with step h gives a bump the wrong mass.
    `adjoint` solves with torchdiffeq's odeint_adjoint: its gradient discretizes the continuous one, and
    dRisk/ds_j is a nearly cancelling integral of k_h', so its relative error is far above theta's
    (rk4, 200 steps, h 0.08: 4e-5 against 1e-10; euler: O(dt / h) of the cancelling integral, unusable).
    """

    def __init__(self, particles: Dict[str, Tensor], spec: NetworkSpec, embedding: Tensor, readout: Tensor):
        super().__init__()
        if spec.depth_kernel not in KERNELS:
            raise ValueError(f"unknown depth kernel {spec.depth_kernel!r}; choose one of {', '.join(KERNELS)}")
        check_shapes(spec, particles, embedding, readout)
        if spec.integrator != "dopri5" and 1.0 / (spec.L * spec.substeps) > spec.bandwidth:
            warnings.warn(f"step 1/{spec.L * spec.substeps} exceeds the bandwidth h={spec.bandwidth}: the solver "
                          "can miss bumps (raise model.substeps)", stacklevel=2)
        self.spec = spec
        self.s = nn.Parameter(fold_depth(particles["s"].to(particles["u"].dtype)))
        self.u, self.w, self.b = (nn.Parameter(particles[k]) for k in "uwb")
        self.register_buffer("embedding", embedding.to(particles["u"].dtype))
        self.register_buffer("readout", readout.to(particles["u"].dtype))
        self.sigma = activation(spec.activation)  # relu warns: outside the theory's regularity

    @property
    def J(self) -> int:
        return self.spec.L * self.spec.M

    def field(self, t: Tensor, x: Tensor) -> Tensor:
        """F(t, x): x (N, d) -> (N, d). Particles whose kernel weight is exactly 0 at t are skipped
        (compact kernels, underflowed Gaussian tails): same value and gradient, cost ~ the active ones."""
        k = reflected_kernel(t, self.s.reshape(-1), self.spec.bandwidth, self.spec.depth_kernel) / self.J
        u, w, b = self.u.reshape(self.J, -1), self.w.reshape(self.J, -1), self.b.reshape(-1)
        active = k != 0
        if not bool(active.all()):  # a host sync per evaluation; on GPU the price of the sparsity
            idx = active.nonzero().squeeze(1)
            k, u, w, b = k[idx], u[idx], w[idx], b[idx]
        return self.sigma(torch.addmm(b, x, w.T)) @ (k[:, None] * u)

    def flow(self, X0: Tensor) -> Tensor:
        """X(1) from X(0): (N, d) -> (N, d)."""
        sp = self.spec
        if sp.integrator in TABLEAUX and not sp.adjoint and sp.backprop != "autograd":
            return depth_flow(X0, self.u, self.w, self.b, self.s, sp.bandwidth, sp.depth_kernel, sp.activation,
                              sp.L * sp.substeps, sp.integrator)
        from torchdiffeq import odeint, odeint_adjoint  # it imports scipy (0.4 s): Euler jobs never pay

        solve = odeint_adjoint if sp.adjoint else odeint
        extra = {"adjoint_params": tuple(self.parameters())} if sp.adjoint else {}
        t = torch.tensor([0.0, 1.0], dtype=X0.dtype, device=X0.device)
        if sp.integrator == "dopri5":
            grid = torch.linspace(0.0, 1.0, math.ceil(1.0 / sp.bandwidth) + 1, dtype=X0.dtype, device=X0.device)
            options = {"step_t": grid[1:-1]} if grid.numel() > 2 else {}
            return solve(_DepthField(self), X0, t, method="dopri5", rtol=sp.rtol, atol=sp.atol,
                         options=options, **extra)[-1]
        steps = sp.L * sp.substeps
        # built from the solver's own t: the adjoint's backward pass runs it on the mirrored interval
        grid = lambda f, y0, tt: torch.linspace(float(tt[0]), float(tt[-1]), steps + 1, dtype=tt.dtype,
                                                device=tt.device)
        return solve(_DepthField(self), X0, t, method=sp.integrator, options={"grid_constructor": grid},
                     **extra)[-1]

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, d_in) -> (N, d_out)."""
        return self.flow(x @ self.embedding.T) @ self.readout.T

    def risk(self, x: Tensor, y: Tensor) -> Tensor:
        """(1/N) sum_i 1/2 |R X_1(x_i) - y_i|^2."""
        return 0.5 * (self(x) - y).pow(2).sum(-1).mean()

    def particles(self) -> Dict[str, Tensor]:
        """Detached copies {u, w: (L, M, d), b: (L, M), s: (L, M)}; s folded into [0, 1], the depths the
        model uses (an optimizer step may push the stored s outside)."""
        return {**{k: getattr(self, k).detach().clone() for k in "uwb"}, "s": fold_depth(self.s.detach()).clone()}

    def meta(self) -> dict:
        return {**self.spec.as_dict(), "embedding": self.embedding.detach().cpu().clone(),
                "readout": self.readout.detach().cpu().clone()}

    def detached(self, **changes) -> DepthMobileResNet:
        """A copy on copied tensors, with spec fields changed (e.g. dtype="float64")."""
        spec = replace(self.spec, **changes)
        cast = lambda t: t.detach().to(device=self.u.device, dtype=spec.torch_dtype, copy=True)
        return DepthMobileResNet({k: cast(getattr(self, k)) for k in "uwbs"}, spec, cast(self.embedding),
                                 cast(self.readout))


def flow_step(net: DepthMobileResNet, x: Tensor, y: Tensor, dt: float, geometry: str = "cot",
              kappa: float = 1.0) -> Tuple[Tensor, Tensor]:
    """One explicit Euler step of the COT or Wasserstein gradient flow, in place on `net`.

    theta_j -= dt J dRisk/dtheta_j; `wasserstein` also s_j -= dt kappa J dRisk/ds_j, then folds s into
    [0, 1] (the model is invariant under the fold, and dRisk/ds_j = 0 at s_j in {0, 1}, so the exact flow
    never leaves [0, 1]: the fold only undoes a discrete overshoot). Under `cot` s is not touched.
    Returns (risk, G) of the particles before the step, G = J sum_j (|dRisk/dtheta_j|^2
    [+ kappa |dRisk/ds_j|^2]), so that along the exact flow dRisk/dt = -G.
    """
    if geometry not in ("cot", "wasserstein"):
        raise ValueError(f"unknown geometry {geometry!r}")
    moves_depth = geometry == "wasserstein"
    theta = (net.u, net.w, net.b)
    risk = net.risk(x, y)
    grads = torch.autograd.grad(risk, theta + ((net.s,) if moves_depth else ()))
    J = net.J
    G = J * sum(g.pow(2).sum() for g in grads[:3])
    with torch.no_grad():
        for p, g in zip(theta, grads):
            p.sub_(dt * J * g)
        if moves_depth:
            G = G + kappa * J * grads[3].pow(2).sum()
            net.s.copy_(fold_depth(net.s - dt * kappa * J * grads[3]))
    return risk.detach(), G.detach()
