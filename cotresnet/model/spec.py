"""What defines a network besides its tensors: `NetworkSpec` (particles.pt stores it, and every place that
assembles a network goes through it), the shape check of a network's tensors against it, and `SpecDims`
(L, M, d read from the spec) shared by every network class."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Dict, Optional

import torch
from torch import Tensor

Particles = Dict[str, Tensor]  # {u: ([R,] L, M, d), w: ([R,] L, M, d), b: ([R,] L, M)[, s: (L, M)]}


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
    def from_config(cls, cfg, d_in: int, d_out: int) -> NetworkSpec:
        """The student network's spec of a training config (model.* keys)."""
        m = cfg.model
        return cls(L=m.L, M=m.M, d=m.d, d_in=d_in, d_out=d_out, activation=m.activation, integrator=m.integrator,
                   substeps=m.substeps, rtol=m.rtol, atol=m.atol, adjoint=m.adjoint, backprop=m.backprop,
                   embedding_kind=m.embedding, readout_kind=m.readout, dtype=m.dtype, depth_kernel=m.depth_kernel,
                   bandwidth=m.bandwidth)

    @classmethod
    def from_meta(cls, meta: dict) -> NetworkSpec:
        """The spec stored in a particles.pt meta (which also holds E, R and the parameterization)."""
        return cls(**{f.name: meta[f.name] for f in fields(cls) if f.name in meta})

    def as_dict(self) -> dict:
        return asdict(self)


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


class SpecDims:
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
