"""What the theory talks about, as pure tensor functions (docs/math.md). No Lightning here.

Conventions: a network has L layers of M particles; risk L = (1/n) sum_i 1/2 |R X_1(x_i) - y_i|^2;
the COT gradient norm is G = ||V||^2_{L2(mu)} = L M sum |dL/dtheta|^2 (whatever optimizer is used).
Kernel quantities are float64 and carry the resolution of their eigenvalues (spectra.Eigenvalue).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import torch
from torch import Tensor

from ..model.layered import MeanFieldResNet
from ..model.spec import Particles
from . import kernels as K
from . import transport as T
from .spectra import EIGH_MAX_DIM, Eigenvalue, ResidualSpectrum, eigh_spectrum, kernel_spectrum


def grad_norm2(grads: Iterable[Tensor], L: int, M: int) -> Tensor:
    """G = L M sum |dL/dtheta|^2 from the Euclidean gradients of the particles. Scalar tensor."""
    return L * M * sum(g.pow(2).sum() for g in grads)


def risk_and_grad_norm2(net: MeanFieldResNet, x: Tensor, y: Tensor, depth_weight: Optional[float] = None) -> tuple:
    """(risk, G) of the network on (x, y), from scratch; the network's .grad stays untouched. `depth_weight`:
    depth-mobile particles whose depths move (Wasserstein flow), G then adds kappa L M sum |dL/ds|^2."""
    x, y = x.to(net.u.device, net.u.dtype), y.to(net.u.device, net.u.dtype)
    params = [net.u, net.w, net.b] + ([net.s] if depth_weight is not None else [])
    with torch.enable_grad():
        risk = net.risk(x, y)
        grads = list(torch.autograd.grad(risk, params))
    if depth_weight is not None:
        grads[3] = grads[3] * depth_weight**0.5
    return risk.item(), grad_norm2(grads, net.L, net.M).item()


def fidelity_prediction(risk0: float, integral: float) -> float:
    """The exact flow satisfies dL/dt = -G, so L(t) = L(0) exp(-int_0^t G/L); `integral` is that
    integral accumulated over the steps (sum_k tau * ratio_k, tau the flow time of one step)."""
    return risk0 * math.exp(-integral)


@dataclass(frozen=True)
class KernelDiagnostics:
    """Kernel quantities on n samples (the training set, or its first n_probe samples), float64."""

    n: int
    lambda_min: Eigenvalue
    lambda_max: float
    risk: float
    grad_norm2: float
    spectrum: ResidualSpectrum
    feature: List[Eigenvalue]
    u_bound: Optional[Dict[str, float]]
    K: Optional[Tensor] = None  # the tangent kernel itself, when asked for (keep_kernel)
    X: Optional[Tensor] = None  # and the states at the layer boundaries, (L + 1, n, d)
    eig: Optional[tuple] = None  # and K's eigendecomposition (lambda, V), when one eigh computed the spectrum

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
        }
        if feats:  # layers have feature kernels; depth-mobile particles do not
            smallest = min(self.feature, key=lambda e: e.value)
            row.update({"lambda_min_feature": None if unresolved else smallest.value,
                        "lambda_min_feature_mean": sum(v or 0.0 for v in feats) / len(feats),
                        "lambda_min_feature_resolution": max(e.resolution for e in self.feature),
                        "feature_layers_unresolved": unresolved,
                        "lambda_min_feature_accuracy": None if unresolved else smallest.error,
                        "lambda_min_feature_lower": min(e.lower for e in self.feature)})
        row.update(self.u_bound or {})
        return row


def kernel_diagnostics(net: MeanFieldResNet, x: Tensor, y: Tensor, memory_budget: int = K.MEMORY_BUDGET,
                       eigh_max_dim: int = EIGH_MAX_DIM, keep_kernel: bool = False) -> KernelDiagnostics:
    """Every kernel quantity on x: (n, d_in), y: (n, d_out), in float64.

    G = r^T K r / n^2 (the COT gradient norm of this set's risk). K is built within `memory_budget` bytes
    (kernels module doc); its spectrum (lambda_min, lambda_max, the residual's) comes from one eigh up to
    `eigh_max_dim` rows of K, from Lanczos, certified shift-invert and Gauss quadrature above (spectra).
    """
    net64 = net.detached(dtype="float64")
    x, y = x.to(net64.u.device, torch.float64), y.to(net64.u.device, torch.float64)
    n = x.shape[0]
    feature: List[Eigenvalue] = []
    u_sums: List[float] = []
    if net64.spec.euler:
        q = K.euler_quantities(net64, x, y, memory_budget)
        X, r = q.X, q.r.reshape(-1)

        rest = memory_budget - K.kernel_bytes(n, net64.spec.d_out)  # what the tangent kernel leaves free

        def from_gram(l: int, gram: Tensor) -> None:  # the feature Grams the tangent kernel builds anyway
            u_sums.append(K.u_layer_sum(q, l, gram))
            if net64.M >= n:
                feature.append(K.feature_eigenvalue(net64, X, l, gram, rest, eigh_max_dim))

        kernel = K.tangent_kernel(net64, x, q, memory_budget, from_gram)
    else:
        q, kernel = None, K.tangent_kernel_autograd(net64, x)
        with torch.no_grad():
            X = net64.states(net64.embed(x))
            r = (net64.read(X[-1]) - y).reshape(-1)
    feature = feature or K.feature_spectra(net64, X, memory_budget, eigh_max_dim)
    eig = None
    if keep_kernel and kernel.shape[0] <= max(eigh_max_dim, 2):
        lam_min, lam_max, spectrum, eig = eigh_spectrum(kernel, r)
    else:
        lam_min, lam_max, spectrum = kernel_spectrum(kernel, r, eigh_max_dim)
    return KernelDiagnostics(
        n=n, lambda_min=lam_min, lambda_max=lam_max, risk=0.5 * r.pow(2).sum().item() / n,
        grad_norm2=(r @ kernel @ r).item() / n**2, spectrum=spectrum, feature=feature,
        u_bound=K.u_gradient_bound(net64, q, feature, memory_budget, u_sums) if q is not None else None,
        K=kernel if keep_kernel else None, X=X if keep_kernel else None, eig=eig)


def flatten_particles(p: Particles) -> Tensor:
    """theta_{l,m} in R^{2d+1}: (L, M, 2d + 1)."""
    return torch.cat([p["u"], p["w"], p["b"][..., None]], dim=-1)


def cot_distance(p: Particles, q: Particles) -> float:
    """Exact W_COT(mu, nu) = sqrt((1/L) sum_l W_2^2(mu_l, nu_l)); each W_2 an exact assignment between
    two uniform M-point clouds in R^{2d+1} (scipy's linear_sum_assignment, O(M^3) time, M^2 memory)."""
    return T.cot_distance_bracket(p, q, exact_max_m=p["u"].shape[1]).exact


def cot_distance_upper(p: Particles, q: Particles) -> float:
    """Identity coupling: sqrt((1/(L M)) sum |theta_{l,m} - theta'_{l,m}|^2) >= W_COT."""
    a, b = flatten_particles(p).double(), flatten_particles(q).double()
    return math.sqrt((a - b).pow(2).sum(-1).mean().item())


def cot_distance_lower(p: Particles, q: Particles) -> float:
    """Layer-mean bound: W_2(mu_l, nu_l) >= |mean mu_l - mean nu_l|, so W_COT >= sqrt(mean_l |.|^2)."""
    a, b = flatten_particles(p).double(), flatten_particles(q).double()
    return math.sqrt((a.mean(1) - b.mean(1)).pow(2).sum(-1).mean().item())


# refinement of W_COT stops at this relative width: far below the distances' use (against the path length
# and R_0), and reached by the nearest-neighbour dual alone while particles moved less than their spacing
DISTANCE_TARGET = 1e-3


def distances(now: Particles, init: Particles, exact_max_m: int = T.EXACT_MAX_M, budget: int = T.DEFAULT_BUDGET,
              target: float = DISTANCE_TARGET, exact_fallback_m: int = T.EXACT_FALLBACK_M) -> Dict[str, Optional[float]]:
    """W_COT(mu_t, mu_0) certified (metrics.csv columns): exact (one assignment per layer) while
    M <= exact_max_m (EXACT_MAX_M = 1024: <= 0.2 s a layer); above, the bracket of
    transport.cot_distance_bracket refined, cheapest step first and widest layer first, until its relative
    width is <= `target` or each layer has spent `budget` auction phases. Its lower end is >= the
    layer-mean bound, its upper end <= the identity coupling (both are among its steps).
    `cot_dist_init` is the exact value, None when only bracketed; rel_width = (upper - lower) / upper."""
    br = T.cot_distance_bracket(now, init, exact_max_m=exact_max_m, budget=budget, target=target,
                                exact_fallback_m=exact_fallback_m)
    return {"cot_dist_init": br.exact, "cot_dist_init_lower": br.lower, "cot_dist_init_upper": br.upper,
            "cot_dist_init_rel_width": br.relative_width}


def accuracy(pred: Tensor, y: Tensor) -> float:
    """One-hot classification accuracy."""
    return (pred.argmax(1) == y.argmax(1)).double().mean().item()


def evaluate_members(net, data, members: List[int]) -> Dict[int, Dict[str, float]]:
    """Test risk (and accuracies, for one-hot targets) of the members of a job, no gradient: one forward pass
    for all replicas of a ReplicatedResNet on its stacked data (x_*: (R, N, d_in)), or of one network."""
    stacked = data.x_test.dim() == 3
    out = {r: {} for r in members}
    splits = [("test", data.x_test, data.y_test)] + ([("train", data.x_train, data.y_train)] if data.classification
                                                     else [])
    with torch.no_grad():
        for prefix, x, y in splits:
            if x.shape[-2] == 0:
                continue
            pred = net(x.to(net.u.device, net.u.dtype))
            y = y.to(pred)
            risks = (0.5 * (pred - y).pow(2).sum(-1).mean(-1)).reshape(-1).tolist()
            hits = (pred.argmax(-1) == y.argmax(-1)).double().mean(-1).reshape(-1).tolist()
            for r in members:
                i = r if stacked else 0
                if prefix == "test":
                    out[r]["risk_test"] = risks[i]
                if data.classification:
                    out[r][f"accuracy_{prefix}"] = hits[i]
    return out


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
