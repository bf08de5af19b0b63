"""The discretized mean-field ResNet: particles, single-hidden-layer residuals, depth integrators.

Notation (design.md section 1): L layers, M particles per layer, state dimension d.
Particles theta_{l,m} = (u, w, b) with u, w: (L, M, d) and b: (L, M). The residual of one
particle is phi(x, theta) = u sigma(w . x + b); the field of layer l is the particle mean
F_l(x) = (1/M) sum_m phi(x, theta_{l,m}). Euler with step 1/L is the ResNet
x_{l+1} = x_l + 1/(L M) sum_m phi(x_l, theta_{l,m}).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

ACTIVATION_FUNCTIONS = {
    "tanh": torch.tanh,
    "silu": F.silu,
    "gelu": F.gelu,
    "softplus": F.softplus,
    "relu": torch.relu,
}

_RELU_WARNED = False


def activation(name: str):
    """sigma by name. relu is allowed but lies outside the theory's regularity assumptions."""
    global _RELU_WARNED
    if name == "relu" and not _RELU_WARNED:
        _RELU_WARNED = True
        warnings.warn(
            "activation=relu breaks the regularity assumptions of the COT gradient-flow theory "
            "(non-smooth residuals): uniqueness of the flow and the P-L certificate are not covered.",
            stacklevel=2,
        )
    return ACTIVATION_FUNCTIONS[name]


def activation_derivative(name: str, z: Tensor) -> Tensor:
    """sigma'(z), elementwise, in closed form (used by the structured tangent kernel)."""
    if name == "tanh":
        return 1.0 - torch.tanh(z) ** 2
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1.0 + z * (1.0 - s))
    if name == "gelu":
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    if name == "softplus":
        return torch.sigmoid(z)
    if name == "relu":
        return (z > 0).to(z.dtype)
    raise KeyError(name)


# sigma's backward as ATen's fused kernels do it, grad * sigma'(.) in one pass, reading sigma's
# output (tanh, relu) or its input (silu, gelu, softplus): what a layer must keep for backward.
_ACTIVATION_VJP = {
    "tanh": (True, lambda g, h: torch.ops.aten.tanh_backward(g, h)),
    "relu": (True, lambda g, h: torch.ops.aten.threshold_backward(g, h, 0)),
    "silu": (False, lambda g, z: torch.ops.aten.silu_backward(g, z)),
    "gelu": (False, lambda g, z: torch.ops.aten.gelu_backward(g, z)),
    "softplus": (False, lambda g, z: torch.ops.aten.softplus_backward(g, z, 1, 20)),
}


def _addmm(C: Tensor, A: Tensor, B: Tensor, alpha: float = 1.0) -> Tensor:
    """C + alpha A B for one network (2-D) or R stacked ones (3-D, batched matmul)."""
    if A.dim() == 2:
        return torch.addmm(C, A, B, alpha=alpha)
    return torch.baddbmm(C, A, B, alpha=alpha)


def _layer_preactivation(X: Tensor, w: Tensor, b: Tensor, l: int) -> Tensor:
    """Z_l = X w_l^T + b_l, the bias inside the matmul (a GEMM epilogue on GPU for one network).

    One network: X: (N, d), w: (L, M, d), b: (L, M) -> (N, M); R stacked ones: a leading R on each.
    """
    bias = b.select(-2, l)
    return _addmm(bias if X.dim() == 2 else bias.unsqueeze(-2), X, w.select(-3, l).transpose(-1, -2))


def _layer_activation(X: Tensor, w: Tensor, b: Tensor, l: int, name: str):
    """(sigma(Z_l), what sigma's backward reads: sigma(Z_l) or Z_l), Z_l = X w_l^T + b_l: ([R,] N, M) each."""
    Z = _layer_preactivation(X, w, b, l)
    h = ACTIVATION_FUNCTIONS[name](Z)
    return h, (h if _ACTIVATION_VJP[name][0] else Z)


class _FusedEuler(torch.autograd.Function):
    """The Euler ResNet (one network, or R stacked ones) as one autograd node.

    Plain autograd keeps, per layer, what sigma's backward reads and the matmul input sigma(Z_l)
    (two ([R,] N, M) tensors for silu, gelu, softplus), and builds each layer's parameter gradient as a
    zero-filled (L, M, d) tensor accumulated L times. This node keeps the states and one ([R,] N, M)
    tensor per layer (none with `recompute`, which redoes Z_l = X_l w_l^T + b_l: one more matmul per
    layer, memory O(L N d) instead of O(L N M)), and writes each gradient once. Backward, gs = scale g_{l+1}:
        dZ = (gs u_l^T) * sigma'(Z_l),  dL/du_l = sigma(Z_l)^T gs,  dL/dw_l = dZ^T X_l,  dL/db_l = sum_i dZ,
        g_l = g_{l+1} + dZ w_l  (+ the gradient reaching state l directly)
    Same arithmetic as autograd up to the order of floating-point sums.
    """

    @staticmethod
    def forward(X0, u, w, b, scale, name, recompute):
        L = u.shape[-3]
        states, kept = [X0], []
        for l in range(L):
            h, saved = _layer_activation(states[l], w, b, l, name)
            states.append(_addmm(states[l], h, u.select(-3, l), alpha=scale))
            if not recompute:
                kept.append(saved)
        return (*states[1:], *kept)

    @staticmethod
    def setup_context(ctx, inputs, output):
        X0, u, w, b, scale, name, recompute = inputs
        L = u.shape[-3]
        # X_0 .. X_{L-1}: the last state is the output, never an input of a layer's backward
        ctx.save_for_backward(u, w, b, X0, *output[: L - 1], *output[L:])
        ctx.mark_non_differentiable(*output[L:])
        ctx.set_materialize_grads(False)
        ctx.scale, ctx.name, ctx.recompute = scale, name, recompute

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_out):
        u, w, b, *rest = ctx.saved_tensors
        L = u.shape[-3]
        S, kept = rest[:L], rest[L:]
        saves_output, vjp = _ACTIVATION_VJP[ctx.name]
        grads = {"u": [], "w": [], "b": []}
        g = grad_out[L - 1] if grad_out[L - 1] is not None else torch.zeros_like(S[0])
        for l in reversed(range(L)):
            if ctx.recompute:
                h, saved = _layer_activation(S[l], w, b, l, ctx.name)
            else:
                saved = kept[l]
                h = saved if saves_output else ACTIVATION_FUNCTIONS[ctx.name](saved)
            gs = g * ctx.scale
            dZ = vjp(gs @ u.select(-3, l).transpose(-1, -2), saved)
            grads["u"].append(h.transpose(-1, -2) @ gs)
            grads["w"].append(dZ.transpose(-1, -2) @ S[l])
            grads["b"].append(dZ.sum(-2))
            g = _addmm(g, dZ, w.select(-3, l))
            if l > 0 and grad_out[l - 1] is not None:  # a gradient that enters at state l directly
                g = g + grad_out[l - 1]
        gu, gw = (torch.stack(grads[k][::-1], -3) for k in ("u", "w"))
        gb = torch.stack(grads["b"][::-1], -2)
        return g, gu, gw, gb, None, None, None


def euler_flow(X0: Tensor, u: Tensor, w: Tensor, b: Tensor, name: str, backprop: str = "fused") -> List[Tensor]:
    """States [X_0, .., X_L] of the Euler ResNet, X_{l+1} = X_l + 1/(L M) sum_m u_m sigma(w_m . X_l + b_m).

    One network: X0: (N, d); u, w: (L, M, d); b: (L, M); each state (N, d). R stacked networks: a
    leading R on each, states (R, N, d). Each layer is two (batched) matmuls for all replicas and all
    M particles, the bias inside the first. `backprop`: `fused` and `recompute` go through
    `_FusedEuler` (one autograd node; `recompute` stores the states only), `autograd` records every
    op. The forward is the same bits in all three.
    """
    scale = 1.0 / (u.shape[-3] * u.shape[-2])
    if backprop != "autograd":
        return [X0, *_FusedEuler.apply(X0, u, w, b, scale, name, backprop == "recompute")[: u.shape[-3]]]
    sigma = ACTIVATION_FUNCTIONS[name]
    states = [X0]
    for l in range(u.shape[-3]):
        states.append(_addmm(states[-1], sigma(_layer_preactivation(states[-1], w, b, l)), u.select(-3, l),
                             alpha=scale))
    return states


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


def init_particles(
    L: int, M: int, d: int, scheme: str, scale_u: float, scale_w: float, scale_b: float, seed: int,
    dtype=torch.float32,
) -> Dict[str, Tensor]:
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


class _LayerField(nn.Module):
    """The piecewise-constant field F(s, x) = F_{l(s)}(x) as torchdiffeq wants it: f(t, y)."""

    def __init__(self, net: "MeanFieldResNet"):
        super().__init__()
        self.net = net

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        l = int(layer_index(t, self.net.boundaries(t.dtype, t.device)))
        return self.net.field(l, x)


class _ParticleDims:
    """L, M, d of the particles u: ([R,] L, M, d), for one network or stacked replicas."""

    @property
    def L(self) -> int:
        return self.u.shape[-3]

    @property
    def M(self) -> int:
        return self.u.shape[-2]

    @property
    def d(self) -> int:
        return self.u.shape[-1]


class MeanFieldResNet(_ParticleDims, nn.Module):
    """X(0) = E x, dX/ds = F_{l(s)}(X), output R X(1).

    Parameters u, w: (L, M, d), b: (L, M). Buffers embedding: (d, d_in), readout: (d_out, d).
    """

    def __init__(
        self, u: Tensor, w: Tensor, b: Tensor, activation_name: str, embedding: Tensor, readout: Tensor,
        integrator: str = "euler", substeps: int = 4, rtol: float = 1e-7, atol: float = 1e-9,
        adjoint: bool = False, backprop: str = "fused",
    ):
        super().__init__()
        self.u = nn.Parameter(u)
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(b)
        self.register_buffer("embedding", embedding.to(u.dtype))
        self.register_buffer("readout", readout.to(u.dtype))
        self.activation_name = activation_name
        self.sigma = activation(activation_name)
        self.integrator = integrator
        self.substeps = substeps
        self.rtol, self.atol = rtol, atol
        self.adjoint = adjoint
        self.backprop = backprop
        self._boundaries: Dict[tuple, Tensor] = {}

    def boundaries(self, dtype, device) -> Tensor:
        key = (dtype, device)
        if key not in self._boundaries:
            self._boundaries[key] = layer_boundaries(self.L, dtype, device)
        return self._boundaries[key]

    def field(self, l: int, x: Tensor) -> Tensor:
        """F_l(x) = (1/M) sum_m u_m sigma(w_m . x + b_m). x: (N, d) -> (N, d); one matmul for all M."""
        return (self.sigma(_layer_preactivation(x, self.w, self.b, l)) @ self.u[l]) / self.M

    def embed(self, x: Tensor) -> Tensor:
        return x @ self.embedding.T

    def read(self, X: Tensor) -> Tensor:
        return X @ self.readout.T

    def euler_states(self, X0: Tensor) -> Tensor:
        """The ResNet's states x_0 .. x_L: (L + 1, N, d), x_{l+1} = x_l + 1/(L M) sum_m phi(x_l, theta_{l,m})."""
        return torch.stack(euler_flow(X0, self.u, self.w, self.b, self.activation_name, self.backprop))

    def time_grid(self, dtype, device) -> Tensor:
        """Fixed rk4 grid: `substeps` steps per layer, containing every boundary exactly: (L k + 1,)."""
        bnd = self.boundaries(dtype, device)
        k = self.substeps
        frac = torch.arange(k, dtype=dtype, device=device) / k
        inner = bnd[:-1, None] + (bnd[1:, None] - bnd[:-1, None]) * frac
        return torch.cat([inner.reshape(-1), bnd[-1:]])

    def states(self, X0: Tensor) -> Tensor:
        """X at the layer boundaries s = 0, 1/L, .., 1: (L + 1, N, d), with the configured integrator."""
        if self.integrator == "euler" and not self.adjoint:
            return self.euler_states(X0)
        bnd = self.boundaries(X0.dtype, X0.device)
        solve = odeint_adjoint if self.adjoint else odeint
        extra = {"adjoint_params": tuple(self.parameters())} if self.adjoint else {}
        if self.integrator == "dopri5":
            return solve(_LayerField(self), X0, bnd, method="dopri5", rtol=self.rtol, atol=self.atol,
                         options={"jump_t": bnd[1:-1]}, **extra)
        if self.integrator == "euler":
            return solve(_LayerField(self), X0, bnd, method="euler", options={"perturb": True}, **extra)
        sol = solve(_LayerField(self), X0, self.time_grid(X0.dtype, X0.device), method="rk4",
                    options={"perturb": True}, **extra)
        return sol[:: self.substeps]

    def flow(self, X0: Tensor) -> Tensor:
        """X(1) from X(0): (N, d) -> (N, d)."""
        if self.integrator == "euler" and not self.adjoint:
            return euler_flow(X0, self.u, self.w, self.b, self.activation_name, self.backprop)[-1]
        return self.states(X0)[-1]

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, d_in) -> (N, d_out)."""
        return self.read(self.flow(self.embed(x)))

    def risk(self, x: Tensor, y: Tensor) -> Tensor:
        """L = (1/N) sum_i 1/2 |R X_1(x_i) - y_i|^2."""
        return 0.5 * (self(x) - y).pow(2).sum(-1).mean()

    def particles(self) -> Dict[str, Tensor]:
        """Detached copies {u: (L, M, d), w: (L, M, d), b: (L, M)}."""
        return {"u": self.u.detach().clone(), "w": self.w.detach().clone(), "b": self.b.detach().clone()}

    def meta(self) -> dict:
        return {
            "activation": self.activation_name,
            "d": self.d,
            "d_in": self.embedding.shape[1],
            "d_out": self.readout.shape[0],
            "embedding": self.embedding.detach().cpu().clone(),
            "readout": self.readout.detach().cpu().clone(),
            "integrator": self.integrator,
            "substeps": self.substeps,
            "rtol": self.rtol,
            "atol": self.atol,
            "adjoint": self.adjoint,
            "backprop": self.backprop,
        }


def build_model(cfg, d_in: int, d_out: int) -> MeanFieldResNet:
    """The student network of a training config, with its initial particles."""
    m, i = cfg.model, cfg.init
    dtype = getattr(torch, m.dtype)
    p = init_particles(m.L, m.M, m.d, i.scheme, i.scale_u, i.scale_w, i.scale_b, cfg.seed, dtype)
    return MeanFieldResNet(
        p["u"], p["w"], p["b"], m.activation,
        embedding_matrix(m.embedding, m.d, d_in, cfg.seed, dtype),
        readout_matrix(m.readout, m.d, d_out, cfg.seed, dtype),
        integrator=m.integrator, substeps=m.substeps, rtol=m.rtol, atol=m.atol, adjoint=m.adjoint, backprop=m.backprop,
    )


def model_from_particles(particles: Dict[str, Tensor], meta: dict) -> MeanFieldResNet:
    """Rebuild a network from a particles.pt entry ({u, w, b}) and its meta."""
    return MeanFieldResNet(
        particles["u"].clone(), particles["w"].clone(), particles["b"].clone(), meta["activation"],
        meta["embedding"], meta["readout"], integrator=meta.get("integrator", "euler"),
        substeps=meta.get("substeps", 4), rtol=meta.get("rtol", 1e-7), atol=meta.get("atol", 1e-9),
        adjoint=meta.get("adjoint", False), backprop=meta.get("backprop", "fused"),
    )


class ReplicatedResNet(_ParticleDims, nn.Module):
    """R Euler ResNets of one shape stepped together (a vectorized sweep over seeds, scales, dt, data).

    Parameters u, w: (R, L, M, d), b: (R, L, M); buffers embedding: (R, d, d_in), readout: (R, d_out, d).
    Each layer is one batched matmul for all replicas and all M particles.
    """

    def __init__(self, nets):
        super().__init__()
        first = nets[0]
        if any(n.integrator != "euler" or n.adjoint for n in nets):
            raise ValueError("replicas run the Euler ResNet only (model.integrator=euler, model.adjoint=false)")
        if any(n.activation_name != first.activation_name or n.u.shape != first.u.shape for n in nets):
            raise ValueError("replicas must share activation and particle shapes")
        self.u = nn.Parameter(torch.stack([n.u.detach() for n in nets]))
        self.w = nn.Parameter(torch.stack([n.w.detach() for n in nets]))
        self.b = nn.Parameter(torch.stack([n.b.detach() for n in nets]))
        self.register_buffer("embedding", torch.stack([n.embedding for n in nets]))
        self.register_buffer("readout", torch.stack([n.readout for n in nets]))
        self.activation_name = first.activation_name
        self.backprop = first.backprop

    @property
    def R(self) -> int:
        return self.u.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x: (R, N, d_in) -> (R, N, d_out)."""
        X = euler_flow(x @ self.embedding.transpose(1, 2), self.u, self.w, self.b, self.activation_name,
                       self.backprop)[-1]
        return X @ self.readout.transpose(1, 2)

    def risks(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-replica risks: (R,)."""
        return 0.5 * (self(x) - y).pow(2).sum(-1).mean(-1)

    def replica(self, r: int) -> MeanFieldResNet:
        """Replica r as a MeanFieldResNet sharing this module's storage (detached: for diagnostics)."""
        return MeanFieldResNet(self.u.detach()[r], self.w.detach()[r], self.b.detach()[r], self.activation_name,
                               self.embedding[r], self.readout[r], backprop=self.backprop)
