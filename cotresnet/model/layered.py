"""The discretized mean-field ResNet: particles, single-hidden-layer residuals, depth integrators.

Notation (docs/math.md): L layers, M particles per layer, state dimension d. Particles
theta_{l,m} = (u, w, b) with u, w: (L, M, d) and b: (L, M). The residual of one particle is
phi(x, theta) = u sigma(w . x + b); the field of layer l is F_l(x) = (1/M) sum_m phi(x, theta_{l,m}).
Euler with step 1/L is the ResNet x_{l+1} = x_l + 1/(L M) sum_m phi(x_l, theta_{l,m}).

A network is built from (particles, spec, embedding, readout): `NetworkSpec` holds everything that
is not a tensor, particles.pt stores it, and every place that assembles a network goes through it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict

import torch
from torch import Tensor, nn

from .activations import activation
from .euler import euler_flow, layer_preactivation
from .spec import NetworkSpec, Particles, SpecDims, check_shapes


def layer_boundaries(L: int, dtype=torch.float64, device=None) -> Tensor:
    """The depths s_l = l / L, l = 0..L: (L + 1,), in the dtype the solver's times use.

    The integrators build their time grids from these exact floats, so a lookup against the same
    tensor is exact: no k/L round-off can put a grid time in the previous layer.
    """
    return torch.arange(L + 1, dtype=dtype, device=device) / L


def layer_index(s: Tensor, boundaries: Tensor) -> Tensor:
    """l(s) = min(floor(s L), L - 1), evaluated against the float boundaries: (...) long.

    `floor(s * L)` itself is wrong at grid times: k / L * L can round to k - 1 + 0.999...
    A searchsorted against the same floats the grid was built from is exact, and keeps the
    one-ulp perturbation torchdiffeq applies at layer jumps (`perturb=True`) on the right side.
    """
    L = boundaries.numel() - 1
    idx = torch.searchsorted(boundaries, s.to(boundaries.dtype).reshape(-1), right=True) - 1
    return idx.clamp_(0, L - 1).reshape(s.shape)


class _LayerField(nn.Module):
    """The piecewise-constant field F(s, x) = F_{l(s)}(x) as torchdiffeq wants it: f(t, y)."""

    def __init__(self, net: MeanFieldResNet):
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        l = int(layer_index(t, self.net.boundaries(t.dtype, t.device)))
        return self.net.field(l, x)


class MeanFieldResNet(SpecDims, nn.Module):
    """X(0) = E x, dX/ds = F_{l(s)}(X), output R X(1).

    Parameters u, w: (L, M, d), b: (L, M) (sharing storage with `particles`). Buffers embedding: (d, d_in),
    readout: (d_out, d).
    """

    # one rank's shard of the particles (distributed.ShardedResNet) completes each layer's sum over particles with
    # its ParticleSum, and its ODE solvers control the error of the whole batch with its own norm
    particle_sum = None
    ode_options: Dict[str, object] = {}

    def __init__(self, particles: Particles, spec: NetworkSpec, embedding: Tensor, readout: Tensor):
        super().__init__()
        check_shapes(spec, particles, embedding, readout)
        self.spec = spec
        self.u, self.w, self.b = (nn.Parameter(particles[k]) for k in "uwb")
        self.register_buffer("embedding", embedding.to(particles["u"].dtype))
        self.register_buffer("readout", readout.to(particles["u"].dtype))
        self.sigma = activation(spec.activation)
        self._boundaries: Dict[tuple, Tensor] = {}

    def boundaries(self, dtype, device) -> Tensor:
        key = (dtype, device)
        if key not in self._boundaries:
            self._boundaries[key] = layer_boundaries(self.L, dtype, device)
        return self._boundaries[key]

    def field(self, l: int, x: Tensor) -> Tensor:
        """F_l(x) = (1/M) sum_m u_m sigma(w_m . x + b_m). x: (N, d) -> (N, d); one matmul for all M."""
        return (self.sigma(layer_preactivation(x, self.w, self.b, l)) @ self.u[l]) / self.M

    def embed(self, x: Tensor) -> Tensor:
        return x @ self.embedding.T

    def read(self, X: Tensor) -> Tensor:
        return X @ self.readout.T

    def time_grid(self, dtype, device) -> Tensor:
        """Fixed rk4 grid: `substeps` steps per layer, containing every boundary exactly: (L k + 1,)."""
        bnd = self.boundaries(dtype, device)
        k = self.spec.substeps
        frac = torch.arange(k, dtype=dtype, device=device) / k
        inner = bnd[:-1, None] + (bnd[1:, None] - bnd[:-1, None]) * frac
        return torch.cat([inner.reshape(-1), bnd[-1:]])

    def states(self, X0: Tensor) -> Tensor:
        """X at the layer boundaries s = 0, 1/L, .., 1: (L + 1, N, d), with the configured integrator."""
        s = self.spec
        if s.euler:
            return torch.stack(euler_flow(X0, self.u, self.w, self.b, s.activation, s.backprop, self.particle_sum))
        bnd = self.boundaries(X0.dtype, X0.device)
        from torchdiffeq import odeint, odeint_adjoint  # it imports scipy (0.4 s): Euler jobs never pay

        solve = odeint_adjoint if s.adjoint else odeint
        extra = {"adjoint_params": tuple(self.parameters())} if s.adjoint else {}
        if s.integrator == "dopri5":
            return solve(_LayerField(self), X0, bnd, method="dopri5", rtol=s.rtol, atol=s.atol,
                         options={"jump_t": bnd[1:-1], **self.ode_options}, **extra)
        if s.integrator == "euler":
            return solve(_LayerField(self), X0, bnd, method="euler", options={"perturb": True}, **extra)
        sol = solve(_LayerField(self), X0, self.time_grid(X0.dtype, X0.device), method="rk4",
                    options={"perturb": True}, **extra)
        return sol[:: s.substeps]

    def flow(self, X0: Tensor) -> Tensor:
        """X(1) from X(0): (N, d) -> (N, d)."""
        s = self.spec
        if s.euler:
            return euler_flow(X0, self.u, self.w, self.b, s.activation, s.backprop, self.particle_sum)[-1]
        return self.states(X0)[-1]

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, d_in) -> (N, d_out)."""
        return self.read(self.flow(self.embed(x)))

    def risk(self, x: Tensor, y: Tensor) -> Tensor:
        """L = (1/N) sum_i 1/2 |R X_1(x_i) - y_i|^2."""
        return 0.5 * (self(x) - y).pow(2).sum(-1).mean()

    def particles(self) -> Particles:
        """Detached copies {u: (L, M, d), w: (L, M, d), b: (L, M)}."""
        return {k: getattr(self, k).detach().clone() for k in "uwb"}

    def meta(self) -> dict:
        """The spec and the fixed matrices, as particles.pt stores them (tensors on the CPU)."""
        return {**self.spec.as_dict(), "embedding": self.embedding.detach().cpu().clone(),
                "readout": self.readout.detach().cpu().clone()}

    def detached(self, **changes) -> MeanFieldResNet:
        """A copy on copied tensors, with spec fields changed (e.g. dtype="float64", adjoint=False)."""
        spec = replace(self.spec, **changes)
        dtype, device = spec.torch_dtype, self.u.device
        cast = lambda t: t.detach().to(device=device, dtype=dtype, copy=True)
        return MeanFieldResNet({k: cast(getattr(self, k)) for k in "uwb"}, spec, cast(self.embedding),
                               cast(self.readout))
