"""Lanczos from a vector, with full reorthogonalization, and the Gauss rule it gives of that vector's spectral
measure (the nodes and weights spectra.py reads the residual's spectrum from, above the size of a full
eigendecomposition). Pure tensor functions, float64."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import torch
from torch import Tensor

EPS64 = torch.finfo(torch.float64).eps


def lanczos(matvec: Callable[[Tensor], Tensor], v0: Tensor, steps: int, norm: float) -> Tuple[Tensor, Tensor]:
    """(alpha: (k,), beta: (k - 1,)) of k <= steps Lanczos steps from v0: (N,), with full
    reorthogonalization (twice), stopping early when the Krylov space closes (then the rule is exact):
    a new direction below the matvec's rounding, N eps `norm` (an estimate of the operator's norm)."""
    N = v0.shape[0]
    Q = v0.new_zeros(min(steps, N), N)
    alpha, beta = [], []
    q = v0 / v0.norm()
    for j in range(Q.shape[0]):
        Q[j] = q
        w = matvec(q)
        alpha.append(float(q @ w))
        for _ in range(2):
            w = w - Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        if j + 1 == Q.shape[0] or b <= N * EPS64 * norm:
            break
        beta.append(b)
        q = w / b
    return torch.tensor(alpha, dtype=torch.float64), torch.tensor(beta, dtype=torch.float64)


@dataclass(frozen=True)
class GaussRule:
    """A Gauss rule of r's spectral measure mu = sum_i (v_i.r)^2/|r|^2 delta_{lambda_i}: nodes (ascending,
    in K's eigenvalues) and weights; `exact` when its Krylov space closed (then it is mu itself)."""

    nodes: Tensor
    weights: Tensor
    exact: bool

    def cdf(self, t: float) -> Tuple[float, float]:
        """(mu([0, t)) by the rule, its error bound): by Chebyshev-Markov-Stieltjes the exact value lies
        within the weights of the nodes on either side of t (also in the inverse's variable, monotone in t)."""
        below, above = self.weights[self.nodes < t], self.weights[self.nodes >= t]
        err = max(float(below[-1]) if len(below) else 0.0, float(above[0]) if len(above) else 0.0)
        return float(below.sum()), 0.0 if self.exact else err


def gauss_rule(matvec: Callable[[Tensor], Tensor], r: Tensor, steps: int, norm: float,
               to_eigenvalue: Callable[[Tensor], Tensor] = lambda x: x) -> GaussRule:
    """The Gauss rule of r's measure under the operator `matvec` (Lanczos from r), its nodes mapped to K's
    eigenvalues by `to_eigenvalue` (monotone)."""
    alpha, beta = lanczos(matvec, r, steps, norm)
    T = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
    theta, V = torch.linalg.eigh(T)
    nodes, order = to_eigenvalue(theta).sort()
    exact = len(alpha) < min(steps, r.shape[0]) or len(alpha) == r.shape[0]
    return GaussRule(nodes, (V[0].pow(2) / V[0].pow(2).sum())[order], exact)
