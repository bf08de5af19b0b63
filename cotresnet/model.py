"""The discretized mean-field ResNet: particles, single-hidden-layer residuals, depth integrators.

Notation (docs/math.md): L layers, M particles per layer, state dimension d. Particles
theta_{l,m} = (u, w, b) with u, w: (L, M, d) and b: (L, M). The residual of one particle is
phi(x, theta) = u sigma(w . x + b); the field of layer l is F_l(x) = (1/M) sum_m phi(x, theta_{l,m}).
Euler with step 1/L is the ResNet x_{l+1} = x_l + 1/(L M) sum_m phi(x_l, theta_{l,m}).

A network is built from (particles, spec, embedding, readout): `NetworkSpec` holds everything that
is not a tensor, particles.pt stores it, and every place that assembles a network goes through it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, Optional

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from .activations import activation
from .euler import euler_flow, layer_preactivation

Particles = Dict[str, Tensor]  # {u: ([R,] L, M, d), w: ([R,] L, M, d), b: ([R,] L, M)}


@dataclass(frozen=True)
class NetworkSpec:
    """What defines a network besides its tensors. Shapes: particles u, w: (L, M, d), b: (L, M);
    embedding E: (d, d_in); readout R: (d_out, d). `embedding` / `readout` name how E and R were drawn."""

    L: int
    M: int
    d: int
    d_in: int
    d_out: int
    activation: str = "tanh"
    integrator: str = "euler"  # euler: the ResNet; rk4 / dopri5: torchdiffeq
    substeps: int = 4  # rk4 steps per layer
    rtol: float = 1e-7  # dopri5
    atol: float = 1e-9
    adjoint: bool = False  # odeint_adjoint: memory independent of depth
    backprop: str = "fused"  # euler backward: fused | recompute | autograd
    embedding_kind: str = "pad"  # how E was drawn (model.embedding)
    readout_kind: str = "first"  # how R was drawn (model.readout)
    dtype: str = "float32"
    depth_kernel: Optional[str] = None  # None: layers; gaussian | bump | triweight: depth-mobile particles (depth.py)
    bandwidth: float = 0.1  # h of the depth kernel

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def euler(self) -> bool:
        """The hand-written ResNet (structured kernels and the fused backward apply)."""
        return self.integrator == "euler" and not self.adjoint and self.depth_kernel is None

    @classmethod
    def from_config(cls, cfg, d_in: int, d_out: int) -> "NetworkSpec":
        """The student network's spec of a training config (model.* keys)."""
        m = cfg.model
        return cls(L=m.L, M=m.M, d=m.d, d_in=d_in, d_out=d_out, activation=m.activation, integrator=m.integrator,
                   substeps=m.substeps, rtol=m.rtol, atol=m.atol, adjoint=m.adjoint, backprop=m.backprop,
                   embedding_kind=m.embedding, readout_kind=m.readout, dtype=m.dtype, depth_kernel=m.depth_kernel,
                   bandwidth=m.bandwidth)

    @classmethod
    def from_meta(cls, meta: dict) -> "NetworkSpec":
        """The spec stored in a particles.pt meta (which also holds E, R and the parameterization)."""
        return cls(**{f.name: meta[f.name] for f in fields(cls) if f.name in meta})

    def as_dict(self) -> dict:
        return asdict(self)


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


def init_particles(L: int, M: int, d: int, *, scheme: str = "iid", scale_u: float = 1.0, scale_w: float = 1.0,
                   scale_b: float = 1.0, seed: int, dtype=torch.float32) -> Particles:
    """Particles of mu_0 = Leb x nu: u ~ N(0, scale_u^2 I), w ~ N(0, scale_w^2 I / d), b ~ N(0, scale_b^2).

    scheme `iid`: independent across layers; `shared`: the same M particles in every layer.
    Sampled in float64 from a seeded generator so the draw does not depend on `dtype`.
    Returns {u: (L, M, d), w: (L, M, d), b: (L, M)}.
    """
    g = torch.Generator().manual_seed(seed)
    n_layers = L if scheme == "iid" else 1
    u = torch.randn(n_layers, M, d, generator=g, dtype=torch.float64) * scale_u
    w = torch.randn(n_layers, M, d, generator=g, dtype=torch.float64) * (scale_w / math.sqrt(d))
    b = torch.randn(n_layers, M, generator=g, dtype=torch.float64) * scale_b
    if scheme == "shared":
        u, w, b = (t.expand(L, *t.shape[1:]).clone() for t in (u, w, b))
    return {"u": u.to(dtype), "w": w.to(dtype), "b": b.to(dtype)}


def embedding_matrix(kind: str, d: int, d_in: int, seed: int, dtype=torch.float32) -> Tensor:
    """E: (d, d_in), x -> E x. `pad`: zero padding; `orthogonal`: random orthonormal columns."""
    if kind == "pad":
        return torch.eye(d, d_in, dtype=dtype)
    g = torch.Generator().manual_seed(seed + 7919)
    q, _ = torch.linalg.qr(torch.randn(d, d_in, generator=g, dtype=torch.float64))
    return q.to(dtype)


def readout_matrix(kind: str, d: int, d_out: int, seed: int, dtype=torch.float32) -> Tensor:
    """R: (d_out, d), X -> R X. `first`: first d_out coordinates; `orthogonal`: orthonormal rows."""
    if kind == "first":
        return torch.eye(d_out, d, dtype=dtype)
    return embedding_matrix("orthogonal", d, d_out, seed + 104729, dtype).T.contiguous()


def check_shapes(spec: NetworkSpec, p: Particles, embedding: Tensor, readout: Tensor) -> None:
    """The particles (and depths s of a depth-mobile network), E and R have the spec's shapes, or ValueError."""
    layer, vector = (spec.L, spec.M), (spec.L, spec.M, spec.d)
    want = {"u": vector, "w": vector, "b": layer, **({"s": layer} if spec.depth_kernel else {})}
    got = {k: tuple(p[k].shape[-len(shape):]) if k in p else None for k, shape in want.items()}
    want.update(embedding=(spec.d, spec.d_in), readout=(spec.d_out, spec.d))
    got.update(embedding=tuple(embedding.shape[-2:]), readout=tuple(readout.shape[-2:]))
    bad = [f"{k} {got[k]} (spec: {want[k]})" for k in want if got[k] != want[k]]
    if bad:
        raise ValueError(f"particles do not match their NetworkSpec: {', '.join(bad)}")


class _LayerField(nn.Module):
    """The piecewise-constant field F(s, x) = F_{l(s)}(x) as torchdiffeq wants it: f(t, y)."""

    def __init__(self, net: "MeanFieldResNet"):
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        l = int(layer_index(t, self.net.boundaries(t.dtype, t.device)))
        return self.net.field(l, x)


class _SpecDims:
    """L, M, d read from the network's spec (one network or stacked replicas)."""

    @property
    def L(self) -> int:
        return self.spec.L

    @property
    def M(self) -> int:
        return self.spec.M

    @property
    def d(self) -> int:
        return self.spec.d


class MeanFieldResNet(_SpecDims, nn.Module):
    """X(0) = E x, dX/ds = F_{l(s)}(X), output R X(1).

    Parameters u, w: (L, M, d), b: (L, M) (sharing storage with `particles`). Buffers embedding: (d, d_in),
    readout: (d_out, d).
    """

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
            return torch.stack(euler_flow(X0, self.u, self.w, self.b, s.activation, s.backprop))
        bnd = self.boundaries(X0.dtype, X0.device)
        solve = odeint_adjoint if s.adjoint else odeint
        extra = {"adjoint_params": tuple(self.parameters())} if s.adjoint else {}
        if s.integrator == "dopri5":
            return solve(_LayerField(self), X0, bnd, method="dopri5", rtol=s.rtol, atol=s.atol,
                         options={"jump_t": bnd[1:-1]}, **extra)
        if s.integrator == "euler":
            return solve(_LayerField(self), X0, bnd, method="euler", options={"perturb": True}, **extra)
        sol = solve(_LayerField(self), X0, self.time_grid(X0.dtype, X0.device), method="rk4",
                    options={"perturb": True}, **extra)
        return sol[:: s.substeps]

    def flow(self, X0: Tensor) -> Tensor:
        """X(1) from X(0): (N, d) -> (N, d)."""
        s = self.spec
        if s.euler:
            return euler_flow(X0, self.u, self.w, self.b, s.activation, s.backprop)[-1]
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

    def detached(self, **changes) -> "MeanFieldResNet":
        """A copy on copied tensors, with spec fields changed (e.g. dtype="float64", adjoint=False)."""
        spec = replace(self.spec, **changes)
        dtype, device = spec.torch_dtype, self.u.device
        cast = lambda t: t.detach().to(device=device, dtype=dtype, copy=True)
        return MeanFieldResNet({k: cast(getattr(self, k)) for k in "uwb"}, spec, cast(self.embedding),
                               cast(self.readout))


def build_network(particles: Particles, spec: NetworkSpec, embedding: Tensor, readout: Tensor):
    """The network of a spec: the layered MeanFieldResNet, or depth.DepthMobileResNet when the spec names
    a depth kernel (its particles then carry depths s: (L, M))."""
    if spec.depth_kernel is None:
        return MeanFieldResNet(particles, spec, embedding, readout)
    from .depth import DepthMobileResNet

    return DepthMobileResNet(particles, spec, embedding, readout)


def student_network(cfg, d_in: int, d_out: int):
    """The network a training config trains, with its initial particles (depths on the layer grid)."""
    spec = NetworkSpec.from_config(cfg, d_in, d_out)
    i, dtype = cfg.init, spec.torch_dtype
    particles = init_particles(spec.L, spec.M, spec.d, scheme=i.scheme, scale_u=i.scale_u, scale_w=i.scale_w,
                               scale_b=i.scale_b, seed=cfg.seed, dtype=dtype)
    if spec.depth_kernel is not None:
        from .depth import with_grid_depths

        particles = with_grid_depths(particles)
    return build_network(particles, spec, embedding_matrix(spec.embedding_kind, spec.d, d_in, cfg.seed, dtype),
                         readout_matrix(spec.readout_kind, spec.d, d_out, cfg.seed, dtype))


def network_from_meta(particles: Particles, meta: dict):
    """Rebuild a network from a particles.pt entry ({u, w, b[, s]}) and its meta, in the spec's dtype."""
    spec = NetworkSpec.from_meta(meta)
    cast = lambda t: t.detach().to(spec.torch_dtype, copy=True)
    return build_network({k: cast(v) for k, v in particles.items()}, spec, cast(meta["embedding"]),
                         cast(meta["readout"]))
