"""The Euler ResNet x_{l+1} = x_l + 1/(L M) sum_m u_m sigma(w_m . x_l + b_m) as one autograd node.

One network: X0: (N, d); u, w: (L, M, d); b: (L, M). R stacked networks (replicas): a leading R on
each, and every layer is one batched matmul for all replicas and all M particles.
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor

from .activations import ACTIVATION_FUNCTIONS, ACTIVATION_VJP


def _addmm(C: Tensor, A: Tensor, B: Tensor, alpha: float = 1.0, particle_sum=None) -> Tensor:
    """C + alpha A B for one network (2-D) or R stacked ones (3-D, batched matmul). With a `particle_sum`
    (distributed.ParticleSum), A B sums over this rank's shard of the particles: it is completed over the ranks
    before it is added."""
    if particle_sum is not None:
        return C.add(particle_sum.total(A @ B), alpha=alpha)
    if A.dim() == 2:
        return torch.addmm(C, A, B, alpha=alpha)
    return torch.baddbmm(C, A, B, alpha=alpha)


def layer_preactivation(X: Tensor, w: Tensor, b: Tensor, l: int) -> Tensor:
    """Z_l = X w_l^T + b_l, the bias inside the matmul (a GEMM epilogue on GPU for one network).

    One network: X: (N, d), w: (L, M, d), b: (L, M) -> (N, M); R stacked ones: a leading R on each.
    """
    bias = b.select(-2, l)
    return _addmm(bias if X.dim() == 2 else bias.unsqueeze(-2), X, w.select(-3, l).transpose(-1, -2))


def _layer_activation(X: Tensor, w: Tensor, b: Tensor, l: int, name: str):
    """(sigma(Z_l), what sigma's backward reads: sigma(Z_l) or Z_l), Z_l = X w_l^T + b_l: ([R,] N, M) each."""
    Z = layer_preactivation(X, w, b, l)
    h = ACTIVATION_FUNCTIONS[name](Z)
    return h, (h if ACTIVATION_VJP[name][0] else Z)


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
    def forward(X0, u, w, b, scale, name, recompute, particle_sum):
        L = u.shape[-3]
        states, kept = [X0], []
        for l in range(L):
            h, saved = _layer_activation(states[l], w, b, l, name)
            states.append(_addmm(states[l], h, u.select(-3, l), scale, particle_sum))
            if not recompute:
                kept.append(saved)
        return (*states[1:], *kept)

    @staticmethod
    def setup_context(ctx, inputs, output):
        X0, u, w, b, scale, name, recompute, particle_sum = inputs
        L = u.shape[-3]
        # X_0 .. X_{L-1}: the last state is the output, never an input of a layer's backward
        ctx.save_for_backward(u, w, b, X0, *output[: L - 1], *output[L:])
        ctx.mark_non_differentiable(*output[L:])
        ctx.set_materialize_grads(False)
        ctx.scale, ctx.name, ctx.recompute, ctx.particle_sum = scale, name, recompute, particle_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_out):
        u, w, b, *rest = ctx.saved_tensors
        L = u.shape[-3]
        S, kept = rest[:L], rest[L:]
        saves_output, vjp = ACTIVATION_VJP[ctx.name]
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
            g = _addmm(g, dZ, w.select(-3, l), particle_sum=ctx.particle_sum)
            if l > 0 and grad_out[l - 1] is not None:  # a gradient that enters at state l directly
                g = g + grad_out[l - 1]
        gu, gw = (torch.stack(grads[k][::-1], -3) for k in ("u", "w"))
        gb = torch.stack(grads["b"][::-1], -2)
        return g, gu, gw, gb, None, None, None, None


def euler_flow(X0: Tensor, u: Tensor, w: Tensor, b: Tensor, name: str, backprop: str = "fused",
               particle_sum=None) -> List[Tensor]:
    """States [X_0, .., X_L] of the Euler ResNet, X_{l+1} = X_l + 1/(L M) sum_m u_m sigma(w_m . X_l + b_m).

    One network: X0: (N, d); u, w: (L, M, d); b: (L, M); each state (N, d). R stacked networks: a
    leading R on each, states (R, N, d). Each layer is two (batched) matmuls for all replicas and all
    M particles, the bias inside the first. `backprop`: `fused` and `recompute` go through
    `_FusedEuler` (one autograd node; `recompute` stores the states only), `autograd` records every
    op. The forward is the same bits in all three. `particle_sum` (distributed.ParticleSum): u, w, b are this
    rank's shard of every layer's particles; each layer's sum over particles, and in backward the state's
    adjoint, is completed over the ranks, and 1/(L M) counts every shard's particles.
    """
    scale = 1.0 / (u.shape[-3] * (u.shape[-2] if particle_sum is None else particle_sum.M))
    if backprop != "autograd":
        return [X0, *_FusedEuler.apply(X0, u, w, b, scale, name, backprop == "recompute", particle_sum)[: u.shape[-3]]]
    sigma = ACTIVATION_FUNCTIONS[name]
    enter = (lambda x: x) if particle_sum is None else particle_sum.enter
    states = [X0]
    for l in range(u.shape[-3]):
        states.append(_addmm(states[-1], sigma(layer_preactivation(enter(states[-1]), w, b, l)), u.select(-3, l),
                             scale, particle_sum))
    return states
