"""Replicas: R Euler ResNets of one spec stepped as one network (a vectorized sweep over seeds, scales,
dt, data), each layer one batched matmul for all replicas and all M particles."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .euler import euler_flow
from .layered import MeanFieldResNet
from .spec import SpecDims


class ReplicatedResNet(SpecDims, nn.Module):
    """R Euler ResNets of one spec stepped together (a vectorized sweep over seeds, scales, dt, data).

    Parameters u, w: (R, L, M, d), b: (R, L, M); buffers embedding: (R, d, d_in), readout: (R, d_out, d).
    Each layer is one batched matmul for all replicas and all M particles.
    """

    def __init__(self, nets):
        super().__init__()
        self.spec = nets[0].spec
        if not self.spec.euler:
            raise ValueError("replicas run the Euler ResNet only (model.integrator=euler, model.adjoint=false)")
        if any(n.spec != self.spec for n in nets):
            raise ValueError("replicas must share one NetworkSpec")
        self.u, self.w, self.b = (nn.Parameter(torch.stack([getattr(n, k).detach() for n in nets])) for k in "uwb")
        self.register_buffer("embedding", torch.stack([n.embedding for n in nets]))
        self.register_buffer("readout", torch.stack([n.readout for n in nets]))

    @property
    def R(self) -> int:
        return self.u.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """x: (R, N, d_in) -> (R, N, d_out)."""
        X = euler_flow(x @ self.embedding.transpose(1, 2), self.u, self.w, self.b, self.spec.activation,
                       self.spec.backprop)[-1]
        return X @ self.readout.transpose(1, 2)

    def risks(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-replica risks: (R,)."""
        return 0.5 * (self(x) - y).pow(2).sum(-1).mean(-1)

    def replica(self, r: int) -> MeanFieldResNet:
        """Replica r as a MeanFieldResNet sharing this module's storage (detached: for diagnostics)."""
        return MeanFieldResNet({k: getattr(self, k).detach()[r] for k in "uwb"}, self.spec, self.embedding[r],
                               self.readout[r])
