"""What the theory talks about, as pure tensor functions (design.md section 3). No Lightning here.

Conventions: a network has L layers of M particles; risk L = (1/N) sum_i 1/2 |R X_1(x_i) - y_i|^2;
the COT gradient norm is G = ||V||^2_{L2(mu)} = L M sum |dL/dtheta|^2 (whatever optimizer is used).
Kernels are computed in float64 on explicit formulas for the Euler ResNet; ODE integrators fall back
to an autograd Jacobian.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .model import MeanFieldResNet, activation_derivative, model_from_particles

Particles = Dict[str, Tensor]  # {u: (L, M, d), w: (L, M, d), b: (L, M)}


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


def pl_ratio(G: Tensor, risk: Tensor) -> Tensor:
    """The Polyak-Lojasiewicz ratio G / L."""
    return G / risk


def fidelity_prediction(risk0: float, integral: float) -> float:
    """The exact flow satisfies dL/dt = -G, so L(t) = L(0) exp(-int_0^t G/L); `integral` is that
    integral accumulated over the steps (sum_k dt * ratio_k)."""
    return risk0 * math.exp(-integral)


def as_float64(net: MeanFieldResNet) -> MeanFieldResNet:
    """A detached float64 copy (diagnostics never touch the training network)."""
    meta = net.meta()
    meta["embedding"] = meta["embedding"].double()
    meta["readout"] = meta["readout"].double()
    return model_from_particles({k: v.double() for k, v in net.particles().items()}, meta).to(net.u.device)


def euler_quantities(net: MeanFieldResNet, x: Tensor, y: Tensor) -> Dict[str, Tensor]:
    """Forward and explicit backward sweep of the Euler ResNet on samples x: (n, d_in), y: (n, d_out).

    Returns states X: (L + 1, n, d) (X[l] enters layer l), pre-activations Z: (L, n, M),
    readout Jacobians A: (L, n, d_out, d) with A[l][i] = d(R x_L^i) / d x_{l+1}^i, residuals r: (n, d_out).
    """
    L, M = net.L, net.M
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
            C = (A[-1] @ net.u[l].T) * activation_derivative(net.activation_name, Z[l])[:, None, :]
            A.append(A[-1] + C @ net.w[l] / (L * M))
        A.reverse()
        r = net.read(X[-1]) - y
    return {"X": torch.stack(X), "Z": torch.stack(Z), "A": torch.stack(A), "r": r}


def tangent_kernel(net: MeanFieldResNet, x: Tensor, q: Optional[Dict[str, Tensor]] = None) -> Tensor:
    """COT tangent kernel K = L M J J^T, J = d(R X_1(x_i)) / d theta: (n d_out, n d_out), rows (i, k).

    Euler: per layer, K += 1/(L M) [(A A^T) o (F F^T) + (B B^T) o (X X^T + 1)] with F = sigma(Z),
    B[(i,k), m] = sigma'(z_im) (A^i u_m)_k; nothing of size n d_out x P is formed.
    `q`: euler_quantities(net, x, .) when the caller already has them.
    """
    if net.integrator != "euler" or net.adjoint:
        return tangent_kernel_autograd(net, x)
    L, M = net.L, net.M
    if q is None:
        q = euler_quantities(net, x, torch.zeros(x.shape[0], net.readout.shape[0], dtype=x.dtype, device=x.device))
    n, d_out = x.shape[0], net.readout.shape[0]
    expand = lambda S: S.repeat_interleave(d_out, 0).repeat_interleave(d_out, 1)
    K = torch.zeros(n * d_out, n * d_out, dtype=x.dtype, device=x.device)
    for l in range(L):
        A = q["A"][l].reshape(n * d_out, net.d)
        F = net.sigma(q["Z"][l])
        B = (q["A"][l] @ net.u[l].detach().T) * activation_derivative(net.activation_name, q["Z"][l])[:, None, :]
        B = B.reshape(n * d_out, M)
        Xl = q["X"][l]
        K += (A @ A.T) * expand(F @ F.T) + (B @ B.T) * expand(Xl @ Xl.T + 1.0)
    return K / (L * M)


def tangent_kernel_autograd(net: MeanFieldResNet, x: Tensor) -> Tensor:
    """K = L M J J^T with J built row by row by backprop (any integrator; memory n d_out x P)."""
    adjoint, net.adjoint = net.adjoint, False  # same solution; direct backprop is exact for J
    try:
        out = net(x).reshape(-1)
        params = list(net.parameters())
        rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)]) for o in out]
    finally:
        net.adjoint = adjoint
    J = torch.stack(rows)
    return net.L * net.M * J @ J.T


def lambda_min(K: Tensor) -> float:
    """Smallest eigenvalue of a symmetric matrix, in float64 (fp32 solvers get the sign wrong near 0)."""
    return float(torch.linalg.eigvalsh(K.double())[0])


def feature_kernels(net: MeanFieldResNet, X: Tensor) -> Tensor:
    """The paper's kernel for SHL residuals: K_l = F_l F_l^T / M, F_l[i, m] = sigma(w_{l,m} . X[l]^i + b_{l,m}).

    X: (L + 1, n, d) states at the layer boundaries -> (L, n, n).
    """
    Z = torch.baddbmm(net.b.detach()[:, None, :], X[:-1], net.w.detach().transpose(1, 2))
    F = net.sigma(Z)
    return F @ F.transpose(1, 2) / net.M


def feature_lambda_min(net: MeanFieldResNet, X: Tensor) -> Tensor:
    """lambda_min(K_l) per layer: (L,). Exactly 0 when M < n (rank of F_l at most M)."""
    n = X.shape[1]
    if net.M < n:
        return torch.zeros(net.L, dtype=torch.float64)
    return torch.linalg.eigvalsh(feature_kernels(net, X).double())[:, 0].cpu()


def u_gradient_identity(net: MeanFieldResNet, x: Tensor, y: Tensor, q: Optional[Dict[str, Tensor]] = None,
                        lam: Optional[Tensor] = None) -> Dict[str, float]:
    """The u part of G and its feature-kernel lower bound (Euler ResNet):

    G_u = sum_l 1/(L n^2) sum_{ij} (g^i . g^j) K_l[i, j] >= sum_l 1/(L n^2) lambda_min(K_l) sum_i |g^i|^2,
    with g^i = n dL/dx_{l+1}^i = A_l^{iT} r^i. `q`, `lam`: precomputed euler_quantities and feature_lambda_min.
    """
    q = euler_quantities(net, x, y) if q is None else q
    n, L = x.shape[0], net.L
    g = torch.einsum("lnkd,nk->lnd", q["A"], q["r"])  # (L, n, d)
    K = feature_kernels(net, q["X"])
    G_u = (torch.einsum("lid,ljd,lij->", g, g, K) / (L * n * n)).item()
    lam = (feature_lambda_min(net, q["X"]) if lam is None else lam).to(g.device)
    bound = ((lam * g.pow(2).sum((1, 2))).sum() / (L * n * n)).item()
    return {"grad_norm2_u": G_u, "grad_norm2_u_lower": bound}


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


def cot_step_length(p: Particles, q: Particles) -> float:
    """COT length of one step: sqrt((1/(L M)) sum |delta theta|^2) (the identity coupling)."""
    return cot_distance_upper(p, q)


def certificate(risk0: float, lambda0: float, n: int) -> Dict[str, float]:
    """Local P-L certificate: c_0 = lambda_min(K(mu_0)) / n, certified radius R_0 = 2 sqrt(L(mu_0) / c_0)."""
    c0 = lambda0 / n
    radius = 2.0 * math.sqrt(risk0 / c0) if c0 > 0 else math.inf
    return {"c0": c0, "certified_radius": radius}


def kernel_diagnostics(net: MeanFieldResNet, x: Tensor, y: Tensor) -> Dict[str, object]:
    """All kernel quantities on a probe set x: (n, d_in), y: (n, d_out), in float64.

    pl_ratio_probe = (r^T K r / n^2) / L_probe and its bound pl_lower_bound = 2 lambda_min(K) / n.
    """
    net64 = as_float64(net)
    x, y = x.double(), y.double()
    n = x.shape[0]
    euler = net64.integrator == "euler" and not net64.adjoint
    q = euler_quantities(net64, x, y) if euler else None
    K = tangent_kernel(net64, x, q)
    if euler:
        X, r = q["X"], q["r"].reshape(-1)
    else:
        with torch.no_grad():
            X = net64.states(net64.embed(x))
            r = (net64.read(X[-1]) - y).reshape(-1)
    lam = lambda_min(K)
    risk = 0.5 * r.pow(2).sum().item() / n
    G = (r @ K @ r).item() / n**2
    lam_feat = feature_lambda_min(net64, X)
    out = {
        "lambda_min_tangent": lam,
        "risk_probe": risk,
        "grad_norm2_probe": G,
        "pl_ratio_probe": G / risk if risk > 0 else math.nan,
        "pl_lower_bound": 2.0 * lam / n,
        "lambda_min_feature": lam_feat.min().item(),
        "lambda_min_feature_mean": lam_feat.mean().item(),
        "lambda_min_feature_layers": lam_feat,
    }
    if euler:
        out.update(u_gradient_identity(net64, x, y, q, lam_feat))
    return out


def accuracy(pred: Tensor, y: Tensor) -> float:
    """One-hot classification accuracy."""
    return (pred.argmax(1) == y.argmax(1)).double().mean().item()


def evaluate(net: MeanFieldResNet, x: Tensor, y: Tensor, classification: bool, prefix: str) -> Dict[str, float]:
    """Risk (and accuracy for one-hot targets) of the network on (x, y), no gradient."""
    if x.shape[0] == 0:
        return {}
    with torch.no_grad():
        pred = net(x.to(net.u.dtype))
        out = {f"risk_{prefix}": (0.5 * (pred - y.to(pred.dtype)).pow(2).sum(-1).mean()).item()}
        if classification:
            out[f"accuracy_{prefix}"] = accuracy(pred, y)
    return out


def all_diagnostics(net: MeanFieldResNet, init: Optional[Particles], x_train: Tensor, y_train: Tensor,
                    n_probe: int) -> Dict[str, float]:
    """Every diagnostic of one set of particles, from scratch (used by `cotresnet-diagnose`)."""
    risk, G = risk_and_grad_norm2(net, x_train, y_train)
    out = {"risk_train": risk, "grad_norm2": G, "pl_ratio": G / risk}
    kd = kernel_diagnostics(net, x_train[:n_probe], y_train[:n_probe])
    out.update({k: v for k, v in kd.items() if not isinstance(v, Tensor)})
    if init is not None:
        now = net.particles()
        out["cot_dist_init"] = cot_distance(now, init)
        out["cot_dist_init_upper"] = cot_distance_upper(now, init)
    return out
