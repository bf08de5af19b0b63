"""What the theory talks about, as pure tensor functions (docs/math.md). No Lightning here.

Conventions: a network has L layers of M particles; risk L = (1/n) sum_i 1/2 |R X_1(x_i) - y_i|^2;
the COT gradient norm is G = ||V||^2_{L2(mu)} = L M sum |dL/dtheta|^2 (whatever optimizer is used).
Kernel quantities are float64 and carry the resolution of their eigenvalues (kernels.Eigenvalue).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from . import kernels as K
from .model import MeanFieldResNet, Particles


def grad_norm2(grads: Iterable[Tensor], L: int, M: int) -> Tensor:
    """G = L M sum |dL/dtheta|^2 from the Euclidean gradients of the particles. Scalar tensor."""
    return L * M * sum(g.pow(2).sum() for g in grads)


def risk_and_grad_norm2(net: MeanFieldResNet, x: Tensor, y: Tensor) -> tuple:
    """(risk, G) of the network on (x, y), from scratch; the network's .grad stays untouched."""
    x, y = x.to(net.u.device, net.u.dtype), y.to(net.u.device, net.u.dtype)
    with torch.enable_grad():
        risk = net.risk(x, y)
        grads = torch.autograd.grad(risk, list(net.parameters()))
    return risk.item(), grad_norm2(grads, net.L, net.M).item()


def fidelity_prediction(risk0: float, integral: float) -> float:
    """The exact flow satisfies dL/dt = -G, so L(t) = L(0) exp(-int_0^t G/L); `integral` is that
    integral accumulated over the steps (sum_k tau * ratio_k, tau the flow time of one step)."""
    return risk0 * math.exp(-integral)


@dataclass(frozen=True)
class ResidualSpectrum:
    """Where the residual r lives in K's spectrum K = V diag(lam) V^T.

    `decades`: (k, count, share) for eigenvalues in [10^k, 10^(k+1)), share = sum over them of
    (v.r)^2 / |r|^2; eigenvalues at or below the resolution go to `unresolved` (count, share).
    `effective_eigenvalue` = r^T K r / |r|^2 in [lambda_min, lambda_max]: the P-L ratio is
    2 effective_eigenvalue / n, its kernel bound 2 lambda_min / n. `top_share`: share in [lambda_max/10, lambda_max].
    """

    decades: List[tuple]
    unresolved: tuple
    effective_eigenvalue: float
    top_share: float


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


@dataclass(frozen=True)
class KernelDiagnostics:
    """Kernel quantities on n samples (the training set, or its first n_probe samples), float64."""

    n: int
    lambda_min: K.Eigenvalue
    lambda_max: float
    risk: float
    grad_norm2: float
    spectrum: ResidualSpectrum
    feature: List[K.Eigenvalue]
    u_bound: Optional[Dict[str, float]]

    @property
    def pl_lower_bound(self) -> Optional[float]:
        """2 lambda_min(K) / n <= G / L; None when lambda_min is unresolved."""
        return 2.0 * self.lambda_min.value / self.n if self.lambda_min.resolved else None

    def row(self) -> Dict[str, Optional[float]]:
        """The metrics.csv columns of these kernels (None: unresolved, left empty)."""
        ratio = self.grad_norm2 / self.risk if self.risk > 0 else math.nan
        bound = self.pl_lower_bound
        feats = [e.reported for e in self.feature]
        unresolved = sum(v is None for v in feats)
        row = {
            "lambda_min_tangent": self.lambda_min.reported, "lambda_min_tangent_resolution": self.lambda_min.resolution,
            "lambda_max_tangent": self.lambda_max, "risk_probe": self.risk, "pl_ratio_probe": ratio,
            "pl_lower_bound": bound, "rate_over_bound": ratio / bound if bound else None,
            "residual_top_share": self.spectrum.top_share,
            "lambda_min_feature": None if unresolved else min(feats),
            "lambda_min_feature_mean": sum(v or 0.0 for v in feats) / len(feats),
            "lambda_min_feature_resolution": max(e.resolution for e in self.feature),
            "feature_layers_unresolved": unresolved,
        }
        row.update(self.u_bound or {})
        return row


def kernel_diagnostics(net: MeanFieldResNet, x: Tensor, y: Tensor) -> KernelDiagnostics:
    """Every kernel quantity on x: (n, d_in), y: (n, d_out), in float64, from one eigendecomposition of K.

    G = r^T K r / n^2 (the COT gradient norm of this set's risk) and the residual's spectrum.
    """
    net64 = net.detached(dtype="float64")
    x, y = x.to(net64.u.device, torch.float64), y.to(net64.u.device, torch.float64)
    n = x.shape[0]
    q = K.euler_quantities(net64, x, y) if net64.spec.euler else None
    kernel = K.tangent_kernel(net64, x, q)
    if q is not None:
        X, r = q.X, q.r.reshape(-1)
    else:
        with torch.no_grad():
            X = net64.states(net64.embed(x))
            r = (net64.read(X[-1]) - y).reshape(-1)
    lam, V = torch.linalg.eigh(kernel)
    lam_min = K.gram_eigenvalue(lam[0], lam[-1], kernel.shape[0])
    feature = K.feature_spectra(net64, X)
    return KernelDiagnostics(
        n=n, lambda_min=lam_min, lambda_max=float(lam[-1]), risk=0.5 * r.pow(2).sum().item() / n,
        grad_norm2=(r @ kernel @ r).item() / n**2, spectrum=residual_spectrum(lam, V, r, lam_min.resolution),
        feature=feature, u_bound=K.u_gradient_bound(net64, q, feature) if q is not None else None)


def flatten_particles(p: Particles) -> Tensor:
    """theta_{l,m} in R^{2d+1}: (L, M, 2d + 1)."""
    return torch.cat([p["u"], p["w"], p["b"][..., None]], dim=-1)


def cot_distance(p: Particles, q: Particles) -> float:
    """Exact W_COT(mu, nu) = sqrt((1/L) sum_l W_2^2(mu_l, nu_l)); each W_2 an exact assignment between
    two uniform M-point clouds in R^{2d+1} (scipy's linear_sum_assignment)."""
    a, b = flatten_particles(p).double().cpu(), flatten_particles(q).double().cpu()
    total = 0.0
    for l in range(a.shape[0]):
        C = torch.cdist(a[l], b[l], compute_mode="donot_use_mm_for_euclid_dist").pow(2).numpy()
        rows, cols = linear_sum_assignment(C)
        total += C[rows, cols].mean()
    return math.sqrt(max(total, 0.0) / a.shape[0])


def cot_distance_upper(p: Particles, q: Particles) -> float:
    """Identity coupling: sqrt((1/(L M)) sum |theta_{l,m} - theta'_{l,m}|^2) >= W_COT."""
    a, b = flatten_particles(p).double(), flatten_particles(q).double()
    return math.sqrt((a - b).pow(2).sum(-1).mean().item())


def cot_distance_lower(p: Particles, q: Particles) -> float:
    """Layer-mean bound: W_2(mu_l, nu_l) >= |mean mu_l - mean nu_l|, so W_COT >= sqrt(mean_l |.|^2)."""
    a, b = flatten_particles(p).double(), flatten_particles(q).double()
    return math.sqrt((a.mean(1) - b.mean(1)).pow(2).sum(-1).mean().item())


def distances(now: Particles, init: Particles) -> Dict[str, float]:
    """W_COT(mu_t, mu_0) exactly and its two bounds (metrics.csv columns)."""
    return {"cot_dist_init": cot_distance(now, init), "cot_dist_init_upper": cot_distance_upper(now, init),
            "cot_dist_init_lower": cot_distance_lower(now, init)}


def accuracy(pred: Tensor, y: Tensor) -> float:
    """One-hot classification accuracy."""
    return (pred.argmax(1) == y.argmax(1)).double().mean().item()


def evaluate(net: MeanFieldResNet, x: Tensor, y: Tensor, classification: bool, prefix: str) -> Dict[str, float]:
    """Risk (and accuracy for one-hot targets) of the network on (x, y), no gradient."""
    if x.shape[0] == 0:
        return {}
    with torch.no_grad():
        pred = net(x.to(net.u.device, net.u.dtype))
        out = {f"risk_{prefix}": (0.5 * (pred - y.to(pred)).pow(2).sum(-1).mean()).item()}
        if classification:
            out[f"accuracy_{prefix}"] = accuracy(pred, y.to(pred))
    return out
