"""The initial particles of mu_0 = Leb x nu, and the fixed embedding E and readout R (docs/math.md).

Every draw is seeded and made in float64, so that it does not depend on the model's dtype. The embedding and
readout draw from their own streams (offsets EMBEDDING_STREAM, READOUT_STREAM of the seed).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .spec import Particles

EMBEDDING_STREAM, READOUT_STREAM = 7919, 104729  # seed offsets of E's and R's draws


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
    g = torch.Generator().manual_seed(seed + EMBEDDING_STREAM)
    q, _ = torch.linalg.qr(torch.randn(d, d_in, generator=g, dtype=torch.float64))
    return q.to(dtype)


def readout_matrix(kind: str, d: int, d_out: int, seed: int, dtype=torch.float32) -> Tensor:
    """R: (d_out, d), X -> R X. `first`: first d_out coordinates; `orthogonal`: orthonormal rows."""
    if kind == "first":
        return torch.eye(d_out, d, dtype=dtype)
    return embedding_matrix("orthogonal", d, d_out, seed + READOUT_STREAM, dtype).T.contiguous()
