"""Spectra of large PSD kernels (float64), each number with its accuracy. Pure tensor functions.

Up to EIGH_MAX_DIM rows a full eigendecomposition (LAPACK) gives everything: lambda_min with the Gram
resolution N eps ||K||_2 and the residual's exact share per eigenvalue. Above it (eigh is O(N^3) with
N^2-word vectors and workspace), three cheaper methods:
- lambda_max: Lanczos (ARPACK) on K;
- lambda_min: shift-invert Lanczos on (K + tau I)^-1 through one Cholesky factor (ARPACK, its work
  bounded), giving a unit v with lambda = v^T K v >= lambda_min (Rayleigh) and residual
  rho = |K v - lambda v| against K itself; a second Cholesky at lambda - rho - N eps ||K|| proves no
  eigenvalue lies below (Sylvester's inertia). Resolution rho + 2 N eps ||K||_2, the Gram resolution plus
  the residual; if the certificate fails the dense eigvalsh decides, and below the resolution (a
  numerically singular K) there is nothing to prove. Memory: K and one factor, 2 N^2 words;
- the residual's spectrum: Lanczos started from r (full reorthogonalization) gives the Gauss quadrature of
  r's spectral measure mu = sum_i (v_i.r)^2/|r|^2 delta_{lambda_i}: once under K (resolving the top of
  the spectrum) and once under (K + tau I)^-1 with the same factor (resolving the bottom). By the
  Chebyshev-Markov-Stieltjes inequalities each rule's distribution function is within one node weight of
  mu's at every point; each value is taken from the rule with the smaller such error, and every share
  carries the sum of the errors at its interval's ends (`share_resolution`); eigenvalue counts are not
  seen (None). A Krylov space that closes (breakdown) makes a rule exact. Like every number here, this
  holds for K up to a perturbation of N eps ||K||_2 (the solves' backward error).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .lanczos import EPS64, GaussRule, gauss_rule

# full eigh (values and vectors) up to this size: ~3.4 s and ~4 N^2 words (128 MB) at 2048 on one core
EIGH_MAX_DIM = 2048
# ARPACK's work per extreme eigenpair: at most ~ARPACK_RESTARTS x ARPACK_NCV operator applications (a
# numerically singular K puts a cluster at the top of (K + tau I)^-1, where Lanczos never converges)
ARPACK_NCV, ARPACK_RESTARTS = 20, 10
# Lanczos steps from r, per rule: on a spectrum log-spread over 8 decades, 64 nodes leave the middle
# decades unresolved (share_resolution ~0.6), 128 resolve every decade to ~0.07
QUADRATURE_STEPS = 128


@dataclass(frozen=True)
class Eigenvalue:
    """A computed eigenvalue of a positive semi-definite kernel: its value, its resolution (the detection
    floor: below it the value cannot be told from 0), its accuracy (a bound on |value - exact|) and a proven
    lower bound of the exact eigenvalue.

    Gram form (eigvalsh of K: (n, n)): |computed - exact| <= n eps ||K||_2, which is both the resolution and
    the accuracy. Shift-invert: rho + 2 n eps ||K||_2 (module doc), likewise. From the singular values of a
    factor F (K = F F^T / M, F: (n, m)): sigma_min is known to ds = max(n, m) eps sigma_max (backward-stable
    SVD, Weyl), so lambda = sigma_min^2 / M has resolution ds^2 / M, accuracy (2 sigma_min ds + ds^2) / M
    (much more than its resolution when sigma_min >> ds) and lower bound max(sigma_min - ds, 0)^2 / M.
    An exact structural zero (rank) has resolution 0.
    """

    value: float
    resolution: float
    accuracy: Optional[float] = None  # None: the resolution
    lower_bound: Optional[float] = None  # None: max(value - accuracy, 0)

    @property
    def error(self) -> float:
        """A bound on |value - exact eigenvalue|."""
        return self.resolution if self.accuracy is None else self.accuracy

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
        return max(self.value - self.error, 0.0) if self.lower_bound is None else self.lower_bound


def gram_eigenvalue(lam_min: float, lam_max: float, n: int) -> Eigenvalue:
    """lambda_min of a PSD Gram matrix of size n from eigvalsh, with resolution n eps ||K||_2."""
    return Eigenvalue(float(lam_min), n * EPS64 * max(float(lam_max), 0.0))


@dataclass(frozen=True)
class ResidualSpectrum:
    """Where the residual r lives in K's spectrum K = V diag(lam) V^T.

    `decades`: (k, count, share) for eigenvalues in [10^k, 10^(k+1)), share = sum over them of
    (v.r)^2 / |r|^2; eigenvalues at or below the resolution go to `unresolved` (count, share). Counts are
    None when computed by quadrature. `effective_eigenvalue` = r^T K r / |r|^2 in [lambda_min, lambda_max]:
    the P-L ratio is 2 effective_eigenvalue / n, its kernel bound 2 lambda_min / n. `top_share`: share in
    [lambda_max/10, lambda_max]. `share_resolution`: every share is within it of the exact one (0: eigh).
    """

    decades: List[tuple]
    unresolved: tuple
    effective_eigenvalue: float
    top_share: float
    share_resolution: float = 0.0


def residual_spectrum(lam: Tensor, V: Tensor, r: Tensor, resolution: float) -> ResidualSpectrum:
    """lam: (m,) ascending eigenvalues, V: (m, m) eigenvectors (columns), r: (m,) residual."""
    energy = (V.T @ r).pow(2)
    total = float(energy.sum())
    share = energy / total if total > 0 else torch.zeros_like(energy)
    resolved = lam > resolution
    exps = torch.floor(torch.log10(lam.clamp_min(torch.finfo(lam.dtype).tiny))).long()
    decades = [(int(k), int((exps[resolved] == k).sum()), float(share[resolved][exps[resolved] == k].sum()))
               for k in torch.unique(exps[resolved]).tolist()]
    top = lam >= lam[-1] / 10
    return ResidualSpectrum(decades, (int((~resolved).sum()), float(share[~resolved].sum())),
                            float((lam * energy).sum()) / total if total > 0 else math.nan, float(share[top].sum()))


def quadrature_spectrum(rules: List[GaussRule], resolution: float, lam_max: float,
                        effective: float) -> ResidualSpectrum:
    """ResidualSpectrum from Gauss rules of r's measure: each distribution value from the rule with the
    smallest error there (the forward rule resolves the top of the spectrum, the inverse one the bottom);
    decades are those holding a node of either rule."""
    def cdf(t: float) -> Tuple[float, float]:
        return min((rule.cdf(t) for rule in rules), key=lambda ve: ve[1])

    nodes = torch.cat([rule.nodes for rule in rules])
    nodes = nodes[nodes > resolution]
    exps = sorted(set(torch.floor(torch.log10(nodes)).long().tolist()))
    unresolved, err_res = cdf(resolution)
    decades, errors = [], [err_res]
    for k in exps:
        (lo, e_lo), (hi, e_hi) = cdf(max(10.0**k, resolution)), cdf(10.0 ** (k + 1))
        decades.append((int(k), None, max(hi - lo, 0.0)))
        errors.append(e_lo + e_hi)
    below_top, err_top = cdf(lam_max / 10)
    errors.append(err_top)
    return ResidualSpectrum(decades, (None, unresolved), effective, 1.0 - below_top, min(max(errors), 1.0))


def _operator(N: int, apply: Callable[[Tensor], Tensor], like: Tensor):
    """A scipy LinearOperator applying a torch map on `like`'s device (ARPACK drives from the CPU)."""
    from scipy.sparse.linalg import LinearOperator
    to = lambda v: torch.from_numpy(np.ascontiguousarray(v).reshape(-1)).to(like.device)
    return LinearOperator((N, N), matvec=lambda v: apply(to(v)).cpu().numpy(), dtype=np.float64)


def _start(N: int) -> np.ndarray:
    """A fixed start vector: results are reproducible."""
    return np.random.default_rng(0).standard_normal(N)


def _top_vector(apply: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
    """A unit approximation of the top eigenvector of a symmetric PSD operator on like's size: ARPACK's
    Lanczos within ARPACK_RESTARTS restarts, else its best Ritz vector, else power iterations. Nothing here
    needs convergence: the callers check what they get (Rayleigh quotient, residual, inertia)."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh  # here: jobs without kernels never import it

    N = like.shape[0]
    try:
        v = eigsh(_operator(N, apply, like), k=1, which="LA", v0=_start(N), ncv=min(N, ARPACK_NCV),
                  maxiter=ARPACK_RESTARTS)[1][:, 0]
    except ArpackNoConvergence as e:  # a cluster at the top: any vector of it will do
        v = e.eigenvectors[:, -1] if e.eigenvectors.size else None
    if v is None:
        w = torch.from_numpy(_start(N)).to(like.device)
        for _ in range(ARPACK_NCV):
            w = apply(w / w.norm())
        return w / w.norm()
    v = torch.from_numpy(np.ascontiguousarray(v)).to(like.device)
    return v / v.norm()


def largest_eigenvalue(K: Tensor) -> float:
    """lambda_max of a symmetric K: (N, N): the Rayleigh quotient of ARPACK's top Ritz vector (a lower
    bound, to ~machine precision once converged)."""
    if K.shape[0] <= 2:
        return float(torch.linalg.eigvalsh(K)[-1])
    v = _top_vector(lambda b: K @ b, K)
    return float(v @ (K @ v))


def _cholesky_at(K: Tensor, shift: float) -> Optional[Tensor]:
    """The Cholesky factor of K - shift I, or None where it breaks down (an eigenvalue <= shift, up to
    the backward error); K's diagonal is shifted in place and restored bit for bit (no third N^2 copy)."""
    diag = K.diagonal().clone()
    K.diagonal().sub_(shift)
    C, info = torch.linalg.cholesky_ex(K)
    K.diagonal().copy_(diag)
    return C if int(info) == 0 else None


def _factor(K: Tensor, floor: float) -> Tuple[Tensor, float]:
    """(Cholesky factor of K + tau I, tau): tau = N eps ||K||, grown tenfold while rounding makes K + tau I
    indefinite."""
    tau = max(floor, torch.finfo(torch.float64).tiny)
    C = _cholesky_at(K, -tau)
    while C is None:
        tau *= 10
        C = _cholesky_at(K, -tau)
    return C, tau


def _solver(C: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda b: torch.cholesky_solve(b[:, None], C)[:, 0]


def _bottom_ritz_pair(K: Tensor, C: Tensor) -> Tuple[float, float]:
    """(lambda, rho): the Rayleigh quotient of the top Ritz vector v of (K + tau I)^-1, an upper bound of
    lambda_min, and its residual |K v - lambda v| against K itself (some eigenvalue lies within rho)."""
    v = _top_vector(_solver(C), K)
    Kv = K @ v
    lam = float(v @ Kv)  # as good as 1/mu - tau, and free of tau's rounding
    return lam, float((Kv - lam * v).norm())


def _certified(K: Tensor, lam: float, rho: float, floor: float) -> Eigenvalue:
    """Eigenvalue(lam, rho + 2 floor) once a Cholesky at lam - rho - floor proves no eigenvalue lies below
    (Sylvester's inertia, up to the backward error floor); eigvalsh decides where that fails. Below the
    resolution nothing is to prove: 0 <= lambda_min <= lam (PSD, Rayleigh quotient)."""
    if lam - rho - floor > 0 and _cholesky_at(K, lam - rho - floor) is None:
        vals = torch.linalg.eigvalsh(K)
        return gram_eigenvalue(vals[0], vals[-1], K.shape[0])
    return Eigenvalue(lam, rho + 2 * floor)


def smallest_eigenvalue(K: Tensor, lam_max: float) -> Eigenvalue:
    """lambda_min of a PSD K: (N, N) by certified shift-invert Lanczos (module doc), resolution
    rho + 2 N eps lam_max. Falls back to eigvalsh where the inertia certificate fails."""
    floor = K.shape[0] * EPS64 * max(lam_max, 0.0)
    C, _ = _factor(K, floor)
    lam, rho = _bottom_ritz_pair(K, C)
    del C  # the certificate's factor takes its place: K and one factor at a time
    return _certified(K, lam, rho, floor)


def psd_min_eigenvalue(K: Tensor, eigh_max_dim: int = EIGH_MAX_DIM) -> Eigenvalue:
    """lambda_min of a PSD K: (N, N): eigvalsh up to eigh_max_dim rows, certified shift-invert above."""
    if K.shape[0] <= max(eigh_max_dim, 2):
        vals = torch.linalg.eigvalsh(K)
        return gram_eigenvalue(vals[0], vals[-1], K.shape[0])
    return smallest_eigenvalue(K, largest_eigenvalue(K))


def eigh_spectrum(K: Tensor, r: Tensor) -> Tuple[Eigenvalue, float, ResidualSpectrum, Tuple[Tensor, Tensor]]:
    """kernel_spectrum by one eigh of K: (N, N), and the eigendecomposition (lambda, V) itself."""
    lam, V = torch.linalg.eigh(K)
    lam_min = gram_eigenvalue(lam[0], lam[-1], K.shape[0])
    return lam_min, float(lam[-1]), residual_spectrum(lam, V, r, lam_min.resolution), (lam, V)


def kernel_spectrum(K: Tensor, r: Tensor, eigh_max_dim: int = EIGH_MAX_DIM,
                    steps: int = QUADRATURE_STEPS) -> Tuple[Eigenvalue, float, ResidualSpectrum]:
    """(lambda_min, lambda_max, the residual's spectrum) of K: (N, N) and r: (N,): one eigh up to
    eigh_max_dim rows; above, Lanczos, certified shift-invert and two `steps`-node Gauss rules from r
    (of K and of (K + tau I)^-1, sharing the shift-invert's Cholesky factor)."""
    N = K.shape[0]
    if N <= max(eigh_max_dim, 2):
        return eigh_spectrum(K, r)[:3]
    lam_max = largest_eigenvalue(K)
    floor = N * EPS64 * lam_max
    C, tau = _factor(K, floor)
    lam, rho = _bottom_ritz_pair(K, C)
    inverse = gauss_rule(_solver(C), r, steps, 1 / tau, lambda mu: 1 / mu - tau)
    del C
    lam_min = _certified(K, lam, rho, floor)
    forward = gauss_rule(lambda v: K @ v, r, steps, lam_max)
    effective = float(r @ (K @ r)) / float(r @ r)
    return lam_min, lam_max, quadrature_spectrum([forward, inverse], lam_min.resolution, lam_max, effective)
