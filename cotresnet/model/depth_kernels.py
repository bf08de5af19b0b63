"""The depth kernels of depth-mobile particles (model/depth.py): base densities K on R and their slopes K',
the fold of depths into [0, 1], the reflected kernel k_h(s, s_j) and its slope dk_h(s, s_j)/ds_j (the
fused backward's route from the field to the depths, model/depth_fused.py)."""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

_BUMP_MASS = 0.443993816168079437823  # int_{-1}^{1} exp(-1 / (1 - z^2)) dz (mpmath, 30 digits)


def _gaussian(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _gaussian_and_slope(z: Tensor) -> Tuple[Tensor, Tensor]:
    K = _gaussian(z)
    return K, -z * K


def _bump_parts(z: Tensor) -> Tuple[Tensor, Tensor]:
    inside = z.abs() < 1
    # 1 outside the support keeps exp(-1/q) and its gradient finite where the where() discards them
    return inside, torch.where(inside, 1.0 - z * z, torch.ones_like(z))


def _bump(z: Tensor) -> Tensor:
    inside, q = _bump_parts(z)
    return torch.where(inside, torch.exp(-1.0 / q), torch.zeros_like(z)) / _BUMP_MASS


def _bump_and_slope(z: Tensor) -> Tuple[Tensor, Tensor]:
    # d/dz exp(-1/q) = exp(-1/q) q'/q^2, q' = -2 z: every derivative vanishes at |z| = 1 (C-infinity)
    K = _bump(z)
    _, q = _bump_parts(z)
    return K, K * (-2.0 * z) / (q * q)


def _triweight(z: Tensor) -> Tensor:
    return (35.0 / 32.0) * (1.0 - z * z).clamp(min=0.0) ** 3


def _triweight_and_slope(z: Tensor) -> Tuple[Tensor, Tensor]:
    q = (1.0 - z * z).clamp(min=0.0)
    return (35.0 / 32.0) * q**3, (-105.0 / 16.0) * z * q * q


# name -> (base density K on R with int K = 1, K(-z) = K(z); radius in units of h beyond which K is
# neglected). Gaussian: 2 P(|Z| > 9) = 2.3e-19, below float64 eps; bump (C-infinity) and triweight (C^2): exact.
KERNELS = {"gaussian": (_gaussian, 9.0), "bump": (_bump, 1.0), "triweight": (_triweight, 1.0)}
# name -> z -> (K(z), K'(z)), K' in closed form (tests/model/test_depth_fused.py checks it against autograd)
KERNELS_AND_SLOPES = {"gaussian": _gaussian_and_slope, "bump": _bump_and_slope, "triweight": _triweight_and_slope}


def _fold(s: Tensor) -> Tuple[Tensor, Tensor]:
    """(fold_depth(s), where the fold mirrors s: fold'(s) = -1)."""
    r = torch.remainder(s, 2.0)
    mirrored = r > 1.0
    return torch.where(mirrored, 2.0 - r, r), mirrored


def fold_depth(s: Tensor) -> Tensor:
    """Reflect depths into [0, 1] (period 2, mirror at 0 and 1): (...) -> (...); identity, bitwise, on [0, 1].

    The reflected kernel is invariant under this map, so the model, its risk and dRisk/ds are too.
    """
    return _fold(s)[0]


def _images(s: Tensor, sj: Tensor, h: float, name: str) -> Tuple[Tensor, Tensor]:
    """(z, fold'(s_j) = -1): z = (s_j - s + 2n) / h and (s + s_j - 2n) / h for the images n = -N..N that carry
    mass, (..., J, 4N + 2), s_j folded into [0, 1] first, so that k_h(s, s_j) = sum K(z) / h (K is even) and,
    before the fold, dk_h/ds_j = sum K'(z) / h^2. Images n = -N..N cover [-2N - 1, 2N + 1], at least 2N from
    any s_j in [0, 1]: N = max(1, ceil(radius h / 2)) keeps every image that carries mass."""
    n = max(1, math.ceil(KERNELS[name][1] * h / 2))
    shifts = 2.0 * torch.arange(-n, n + 1, dtype=sj.dtype, device=sj.device)
    sj, mirrored = _fold(sj)
    z = torch.cat([(sj - s[..., None])[..., None] + shifts, (s[..., None] + sj)[..., None] - shifts], -1) / h
    return z, mirrored


def reflected_kernel(s: Tensor, sj: Tensor, h: float, name: str = "gaussian") -> Tensor:
    """k_h(s, s_j) = sum_n [K_h(s - s_j - 2n) + K_h(s + s_j - 2n)], K_h(z) = K(z / h) / h.

    s: (...) depths (a 0-dim tensor for one depth), sj: (J,) -> (..., J). The images of s_j under the
    reflections at 0 and 1 tile the real line, so int_0^1 k_h(s, s_j) ds = int_R K_h = 1 for any s_j in [0, 1]
    (s_j outside is folded in first).
    """
    return KERNELS[name][0](_images(s, sj, h, name)[0]).sum(-1) / h


def reflected_kernel_and_slope(s: Tensor, sj: Tensor, h: float, name: str = "gaussian") -> Tuple[Tensor, Tensor]:
    """(k_h(s, s_j), dk_h(s, s_j)/ds_j): (..., J) each, from the same images (s: (...), sj: (J,)). The slope
    is fold'(s_j) sum_n [K'((s + s_j - 2n)/h) - K'((s - s_j - 2n)/h)] / h^2, fold'(s_j) = -1 where the fold
    mirrors s_j (the derivative autograd takes through fold_depth)."""
    z, mirrored = _images(s, sj, h, name)
    K, dK = KERNELS_AND_SLOPES[name](z)
    dk = dK.sum(-1) / (h * h)
    return K.sum(-1) / h, torch.where(mirrored, -dk, dk)
