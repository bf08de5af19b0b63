"""Kernels of the flow (docs/math.md, "Kernels"), as pure float64 tensor functions. No Lightning here.

COT tangent kernel K = L M J J^T, J = d(R X_1(x_i)) / d theta: (n d_out, n d_out), rows (i, k).
Feature kernels K_l = F_l F_l^T / M, F_l[i, m] = sigma(w_{l,m} . x_l^i + b_{l,m}): (n, n) per layer.
Every eigenvalue comes with its resolution: the absolute accuracy of the float64 computation, below
which a value cannot be told from 0 (`Eigenvalue.resolved`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch
from torch import Tensor

from .activations import activation_derivative
from .model import MeanFieldResNet

EPS64 = torch.finfo(torch.float64).eps


@dataclass(frozen=True)
class Eigenvalue:
    """A computed eigenvalue of a positive semi-definite kernel and its resolution.

    Gram form (eigvalsh of K: (n, n)): |computed - exact| <~ n eps ||K||_2. From singular values of a
    factor F (K = F F^T / M): sigma is known to about max(n, M) eps sigma_max, so lambda = sigma^2 / M is
    resolved down to (max(n, M) eps sigma_max)^2 / M. An exact structural zero (rank) has resolution 0.
    """

    value: float
    resolution: float

    @property
    def resolved(self) -> bool:
        return self.value > self.resolution or (self.resolution == 0.0 and self.value == 0.0)

    @property
    def reported(self) -> Optional[float]:
        """The value when resolved, else None: below the resolution a number would only look meaningful."""
        return self.value if self.resolved else None

    @property
    def lower(self) -> float:
        """A rigorous lower bound of the exact eigenvalue (>= 0 for a PSD kernel)."""
        return max(self.value - self.resolution, 0.0)


class EulerQuantities(NamedTuple):
    """Forward and explicit backward sweep of the Euler ResNet on n samples.

    X: (L + 1, n, d), X[l] enters layer l; Z: (L, n, M) pre-activations; A: (L, n, d_out, d) with
    A[l][i] = d(R x_L^i) / d x_{l+1}^i; r: (n, d_out) residuals R x_L - y.
    """

    X: Tensor
    Z: Tensor
    A: Tensor
    r: Tensor


def euler_quantities(net: MeanFieldResNet, x: Tensor, y: Tensor) -> EulerQuantities:
    """The states, pre-activations, readout Jacobians and residuals of the Euler ResNet on (x, y)."""
    L, M, name = net.L, net.M, net.spec.activation
    with torch.no_grad():
        X = [net.embed(x)]
        Z = []
        for l in range(L):
            Z.append(torch.addmm(net.b[l], X[-1], net.w[l].T))
            X.append(X[-1] + net.sigma(Z[-1]) @ net.u[l] / (L * M))
        n, d_out = x.shape[0], net.readout.shape[0]
        A = [net.readout.expand(n, d_out, net.d)]
        for l in range(L - 1, 0, -1):
            # d x_{l+1} / d x_l = I + 1/(L M) U^T diag(sigma'(z_l)) W
            C = (A[-1] @ net.u[l].T) * activation_derivative(name, Z[l])[:, None, :]
            A.append(A[-1] + C @ net.w[l] / (L * M))
        A.reverse()
        r = net.read(X[-1]) - y
    return EulerQuantities(torch.stack(X), torch.stack(Z), torch.stack(A), r)


def tangent_kernel(net: MeanFieldResNet, x: Tensor, q: Optional[EulerQuantities] = None) -> Tensor:
    """K = L M J J^T: (n d_out, n d_out), rows (i, k).

    Euler: per layer, K += 1/(L M) [(A A^T) o (F F^T) + (B B^T) o (X X^T + 1)] with F = sigma(Z),
    B[(i,k), m] = sigma'(z_im) (A^i u_m)_k; nothing of size n d_out x P is formed. Other integrators
    build J by backprop (memory n d_out x P). `q`: euler_quantities(net, x, .) when the caller has them.
    """
    if not net.spec.euler:
        return tangent_kernel_autograd(net, x)
    L, M, n, d_out = net.L, net.M, x.shape[0], net.readout.shape[0]
    if q is None:
        q = euler_quantities(net, x, torch.zeros(n, d_out, dtype=x.dtype, device=x.device))
    expand = lambda S: S.repeat_interleave(d_out, 0).repeat_interleave(d_out, 1)
    K = torch.zeros(n * d_out, n * d_out, dtype=x.dtype, device=x.device)
    for l in range(L):
        A = q.A[l].reshape(n * d_out, net.d)
        F = net.sigma(q.Z[l])
        B = (q.A[l] @ net.u[l].detach().T) * activation_derivative(net.spec.activation, q.Z[l])[:, None, :]
        B = B.reshape(n * d_out, M)
        K += (A @ A.T) * expand(F @ F.T) + (B @ B.T) * expand(q.X[l] @ q.X[l].T + 1.0)
    return K / (L * M)


def tangent_kernel_autograd(net: MeanFieldResNet, x: Tensor) -> Tensor:
    """K = L M J J^T with J built row by row by backprop (any integrator; direct backprop, never the
    adjoint, so J is exact for the discretized solve)."""
    net = net.detached(adjoint=False)
    out = net(x).reshape(-1)
    params = list(net.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)]) for o in out]
    J = torch.stack(rows)
    return net.L * net.M * J @ J.T


def gram_eigenvalue(lam_min: float, lam_max: float, n: int) -> Eigenvalue:
    """lambda_min of a PSD Gram matrix of size n from eigvalsh, with resolution n eps ||K||_2."""
    return Eigenvalue(float(lam_min), n * EPS64 * max(float(lam_max), 0.0))


def feature_spectra(net: MeanFieldResNet, X: Tensor) -> List[Eigenvalue]:
    """lambda_min(K_l), K_l = F_l F_l^T / M, per layer, from singular values of F_l (float64).

    X: (L + 1, n, d) states at the layer boundaries. Exactly 0 when M < n (rank of F_l at most M).
    """
    n = X.shape[1]
    if net.M < n:
        return [Eigenvalue(0.0, 0.0)] * net.L
    Z = torch.baddbmm(net.b.detach()[:, None, :], X[:-1], net.w.detach().transpose(1, 2))
    return [singular_value_eigenvalue(F, net.M) for F in net.sigma(Z).double()]


def singular_value_eigenvalue(F: Tensor, M: int) -> Eigenvalue:
    """lambda_min(F F^T / M) for F: (n, M), n <= M, as sigma_min(F)^2 / M with its SVD resolution."""
    s = torch.linalg.svdvals(F.double())
    floor = max(F.shape) * EPS64 * float(s[0])
    return Eigenvalue(float(s[-1]) ** 2 / M, floor**2 / M)


def feature_kernels(net: MeanFieldResNet, X: Tensor) -> Tensor:
    """K_l = F_l F_l^T / M: (L, n, n) from the states X: (L + 1, n, d)."""
    Z = torch.baddbmm(net.b.detach()[:, None, :], X[:-1], net.w.detach().transpose(1, 2))
    F = net.sigma(Z)
    return F @ F.transpose(1, 2) / net.M


def u_gradient_bound(net: MeanFieldResNet, q: EulerQuantities, spectra: List[Eigenvalue]) -> dict:
    """The u part of G and its feature-kernel lower bound (Euler ResNet), with g^i = n dL/dx_{l+1}^i = A_l^{iT} r^i:

    G_u = sum_l 1/(L n^2) sum_{ij} (g^i . g^j) K_l[i, j] >= sum_l 1/(L n^2) lambda_min(K_l) sum_i |g^i|^2,
    the bound taken with the rigorous lower end of each lambda_min(K_l) (0 below its resolution).
    """
    n, L = q.r.shape[0], net.L
    g = torch.einsum("lnkd,nk->lnd", q.A, q.r)  # (L, n, d)
    K = feature_kernels(net, q.X)
    G_u = (torch.einsum("lid,ljd,lij->", g, g, K) / (L * n * n)).item()
    lower = torch.tensor([e.lower for e in spectra], dtype=g.dtype, device=g.device)
    bound = ((lower * g.pow(2).sum((1, 2))).sum() / (L * n * n)).item()
    return {"grad_norm2_u": G_u, "grad_norm2_u_lower": bound}
