"""Kernels of the flow (docs/math.md, "Kernels"), as pure float64 tensor functions. No Lightning here.

COT tangent kernel K = L M J J^T, J = d(R X_1(x_i)) / d theta: (n d_out, n d_out), rows (i, k).
Feature kernels K_l = F_l F_l^T / M, F_l[i, m] = sigma(w_{l,m} . x_l^i + b_{l,m}): (n, n) per layer.
Every eigenvalue comes with its resolution: the absolute accuracy of the float64 computation, below
which a value cannot be told from 0 (`Eigenvalue.resolved`).

Memory: the Euler quantities and kernels are built over blocks of particles (and K over blocks of
rows), so that their temporaries, K included, stay within `memory_budget` bytes; nothing of size
L n M or (n d_out)^2 x anything is formed. Beyond the budget: the float64 copy of the particles, and the
eigen-solvers' own 2 N^2 (shift-invert) or ~4 N^2 words (eigh, N <= spectra.EIGH_MAX_DIM).
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional

import torch
from torch import Tensor

from ..model.activations import activation_derivative
from ..model.layered import MeanFieldResNet
from .spectra import EIGH_MAX_DIM, EPS64, Eigenvalue, psd_min_eigenvalue

MEMORY_BUDGET = 2**30  # bytes of kernel temporaries (1 GiB): K of n d_out = 8192 rows takes half of it
# blocks are planned at this fraction of the budget: glibc's heap keeps freed blocks (its mmap threshold
# grows), so peak RSS measured up to 1.3x the planned temporaries; within them at MALLOC_MMAP_THRESHOLD_=131072
ALLOCATOR_SLACK = 0.7
FEATURE_GRAM_DIGITS = 1e3  # a feature lambda_min from the Gram form is kept when known to 3 digits


def particle_chunks(M: int, bytes_per_particle: int, budget: int) -> List[slice]:
    """Slices of the M particles, as few as `budget` bytes allow at `bytes_per_particle` each (planned
    at ALLOCATOR_SLACK of the budget: the heap keeps some freed blocks)."""
    size = int(max(1, min(M, ALLOCATOR_SLACK * budget // max(bytes_per_particle, 1))))
    return [slice(i, min(i + size, M)) for i in range(0, M, size)]


class Preactivations:
    """Z_l = X_l w_l^T + b_l: (n, M) for layer l, computed when asked for (Z[l], or the particles `cols`
    by Z.chunk(l, cols)) so that no (L, n, M) tensor is ever held."""

    def __init__(self, net: MeanFieldResNet, X: Tensor):
        self.w, self.b, self.X = net.w.detach(), net.b.detach(), X

    def __len__(self) -> int:
        return self.w.shape[0]

    def __getitem__(self, l: int) -> Tensor:
        return self.chunk(l, slice(None))

    def chunk(self, l: int, cols: slice) -> Tensor:
        if not -len(self) <= l < len(self):
            raise IndexError(l)
        return torch.addmm(self.b[l, cols], self.X[l], self.w[l, cols].T)


class EulerQuantities(NamedTuple):
    """Forward and explicit backward sweep of the Euler ResNet on n samples.

    X: (L + 1, n, d), X[l] enters layer l; Z: pre-activations, Z[l]: (n, M) (computed on demand);
    A: (L, n, d_out, d) with A[l][i] = d(R x_L^i) / d x_{l+1}^i; r: (n, d_out) residuals R x_L - y.
    """

    X: Tensor
    Z: Preactivations
    A: Tensor
    r: Tensor


def euler_quantities(net: MeanFieldResNet, x: Tensor, y: Tensor, memory_budget: int = MEMORY_BUDGET) -> EulerQuantities:
    """The states, pre-activations, readout Jacobians and residuals of the Euler ResNet on (x, y)."""
    L, M, name = net.L, net.M, net.spec.activation
    n, d_out = x.shape[0], net.readout.shape[0]
    u, w, b = net.u.detach(), net.w.detach(), net.b.detach()
    # per particle: Z, sigma'(Z) and its temporaries (4 n), A u^T and its product (2 n d_out), one spare
    cols = particle_chunks(M, x.element_size() * n * (2 * d_out + 5), memory_budget)
    with torch.no_grad():
        X = [net.embed(x)]
        for l in range(L):
            field = sum(net.sigma(torch.addmm(b[l, c], X[-1], w[l, c].T)) @ u[l, c] for c in cols)
            X.append(X[-1] + field / (L * M))
        Z = Preactivations(net, torch.stack(X))
        A = [net.readout.expand(n, d_out, net.d)]
        for l in range(L - 1, 0, -1):
            # d x_{l+1} / d x_l = I + 1/(L M) U^T diag(sigma'(z_l)) W
            dA = sum(((A[-1] @ u[l, c].T) * activation_derivative(name, Z.chunk(l, c))[:, None, :]) @ w[l, c]
                     for c in cols)
            A.append(A[-1] + dA / (L * M))
        A.reverse()
        r = net.read(X[-1]) - y
    return EulerQuantities(Z.X, Z, torch.stack(A), r)


def kernel_bytes(n: int, d_out: int) -> int:
    """Bytes of the tangent kernel (n d_out)^2 and the two (n, n) Grams held next to it, float64."""
    return 8 * ((n * d_out) ** 2 + 2 * n * n)


def _kernel_blocks(n: int, d_out: int, M: int, budget: int) -> tuple:
    """(rows per block of K, particle chunks) whose temporaries fit `budget` bytes with K itself."""
    N = n * d_out
    free = budget - kernel_bytes(n, d_out)
    if free <= 0:
        raise ValueError(f"a tangent kernel of {N} rows needs {8 * N * N} bytes: above memory_budget={budget}")
    # row blocks of ~N/8 compute only the upper block triangle (56 % of the products)
    rows = max(d_out, min(int(ALLOCATOR_SLACK * free) // (4 * 8 * N), max(N // 8, 64)) // d_out * d_out)
    return rows, particle_chunks(M, 8 * (N + 3 * n), free // 2)


def _add_hadamard_gram(K: Tensor, P: Tensor, W: Tensor, d_out: int, rows: int) -> None:
    """K += (P P^T) o (W kron 1_{d_out x d_out}) on and above the diagonal, `rows` rows at a time.
    P: (n d_out, k), W: (n, n), K: (n d_out, n d_out); the lower part is filled by `_mirror_upper`."""
    N = P.shape[0]
    for r0 in range(0, N, rows):
        r1 = min(r0 + rows, N)
        T = P[r0:r1] @ P[r0:].T
        T.view((r1 - r0) // d_out, d_out, (N - r0) // d_out, d_out).mul_(
            W[r0 // d_out:r1 // d_out, r0 // d_out:, None][:, None])
        K[r0:r1, r0:] += T


def _mirror_upper(K: Tensor, rows: int) -> None:
    """Copy the block upper triangle written by `_add_hadamard_gram` onto the lower one."""
    for r0 in range(0, K.shape[0], rows):
        K[r0 + rows:, r0:r0 + rows] = K[r0:r0 + rows, r0 + rows:].T


def _sigma_and_slope(net: MeanFieldResNet, Z: Tensor) -> tuple:
    """(sigma(Z), sigma'(Z)); tanh's slope from its value, 1 - F^2: one transcendental pass, not two."""
    F = net.sigma(Z)
    if net.spec.activation == "tanh":
        return F, (F * F).neg_().add_(1.0)
    return F, activation_derivative(net.spec.activation, Z)


def tangent_kernel(net: MeanFieldResNet, x: Tensor, q: Optional[EulerQuantities] = None,
                   memory_budget: int = MEMORY_BUDGET,
                   feature_gram: Optional[Callable[[int, Tensor], None]] = None) -> Tensor:
    """K = L M J J^T: (n d_out, n d_out), rows (i, k).

    Euler: per layer, K += 1/(L M) [(A A^T) o (F F^T) + (B B^T) o (X X^T + 1)] with F = sigma(Z),
    B[(i,k), m] = sigma'(z_im) (A^i u_m)_k, accumulated over blocks of particles and rows within
    `memory_budget` bytes; `feature_gram(l, F_l F_l^T)` receives each layer's (n, n) feature Gram, which
    K needs anyway, while K, G and X X^T + 1 alone are held (the rest of the budget is the callback's). Other
    integrators build J by backprop (memory n d_out x P). `q`: euler_quantities(net, x, .).
    """
    if not net.spec.euler:
        return tangent_kernel_autograd(net, x)
    L, M, n, d_out = net.L, net.M, x.shape[0], net.readout.shape[0]
    if q is None:
        q = euler_quantities(net, x, torch.zeros(n, d_out, dtype=x.dtype, device=x.device), memory_budget)
    rows, cols = _kernel_blocks(n, d_out, M, memory_budget)
    K = x.new_zeros(n * d_out, n * d_out)
    u = net.u.detach()
    for l in range(L):
        G = x.new_zeros(n, n)
        H = (q.X[l] @ q.X[l].T).add_(1.0)
        for c in cols:
            F, slope = _sigma_and_slope(net, q.Z.chunk(l, c))
            G.addmm_(F, F.T)
            B = (q.A[l] @ u[l, c].T).mul_(slope[:, None, :])
            _add_hadamard_gram(K, B.reshape(n * d_out, -1), H, d_out, rows)
        del F, slope, B  # the callback gets the chunks' share of the budget
        _add_hadamard_gram(K, q.A[l].reshape(n * d_out, net.d), G, d_out, rows)
        if feature_gram is not None:
            feature_gram(l, G)
    _mirror_upper(K, rows)
    return K.div_(L * M)


def tangent_kernel_autograd(net: MeanFieldResNet, x: Tensor) -> Tensor:
    """K = L M J J^T with J built row by row by backprop (any integrator; direct backprop, never the
    adjoint, so J is exact for the discretized solve)."""
    net = net.detached(adjoint=False)
    out = net(x).reshape(-1)
    params = list(net.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, retain_graph=True)]) for o in out]
    J = torch.stack(rows)
    return net.L * net.M * J @ J.T


def _features(net: MeanFieldResNet, X: Tensor, l: int, cols: slice) -> Tensor:
    """F_l[:, cols] = sigma(X_l w_l^T + b_l): (n, |cols|) from the states X: (L + 1, n, d)."""
    return net.sigma(Preactivations(net, X).chunk(l, cols))


def feature_gram(net: MeanFieldResNet, X: Tensor, l: int, memory_budget: int = MEMORY_BUDGET) -> Tensor:
    """F_l F_l^T: (n, n), over blocks of particles."""
    n = X.shape[1]
    G = X.new_zeros(n, n)
    for c in particle_chunks(net.M, 8 * 2 * n, memory_budget):
        F = _features(net, X, l, c)
        G.addmm_(F, F.T)
    return G


def _r_factor(net: MeanFieldResNet, X: Tensor, l: int, memory_budget: int) -> Tensor:
    """R: (n, n) with R^T R = F_l F_l^T, by a QR of F_l^T over blocks of particles (TSQR): Householder
    QR is backward stable, so R's singular values are F_l's to about max(n, M) eps sigma_max."""
    R = None
    for c in particle_chunks(net.M, 8 * 3 * X.shape[1], memory_budget - 8 * 2 * X.shape[1] ** 2):
        Ft = _features(net, X, l, c).T  # column-major, as LAPACK wants it
        R = torch.linalg.qr(Ft if R is None else torch.cat([R, Ft]), mode="r").R
    return R


def singular_value_eigenvalue(F: Tensor, M: int, width: Optional[int] = None) -> Eigenvalue:
    """lambda_min(F F^T / M) for F: (n, width), n <= width (or its R factor, with `width` given), as
    sigma_min(F)^2 / M: with ds = max(n, width) eps sigma_max (spectra.Eigenvalue), resolution ds^2 / M,
    accuracy (2 sigma_min ds + ds^2) / M and lower bound max(sigma_min - ds, 0)^2 / M."""
    s = torch.linalg.svdvals(F.double())
    ds = max(F.shape[0], width or F.shape[1]) * EPS64 * float(s[0])
    sigma = float(s[-1])
    return Eigenvalue(sigma**2 / M, ds**2 / M, (2 * sigma * ds + ds**2) / M, max(sigma - ds, 0.0) ** 2 / M)


def feature_eigenvalue(net: MeanFieldResNet, X: Tensor, l: int, gram: Tensor, memory_budget: int = MEMORY_BUDGET,
                       eigh_max_dim: int = EIGH_MAX_DIM) -> Eigenvalue:
    """lambda_min(K_l), M >= n, from the Gram form K_l = gram / M (gram = F_l F_l^T) when that knows it to
    FEATURE_GRAM_DIGITS, else from the singular values of F_l (resolution down to ~(M eps)^2 sigma_max^2 / M)."""
    e = psd_min_eigenvalue(gram / net.M, eigh_max_dim)
    if e.value > FEATURE_GRAM_DIGITS * e.resolution:
        return e
    return singular_value_eigenvalue(_r_factor(net, X, l, memory_budget), net.M, width=net.M)


def feature_spectra(net: MeanFieldResNet, X: Tensor, memory_budget: int = MEMORY_BUDGET,
                    eigh_max_dim: int = EIGH_MAX_DIM) -> List[Eigenvalue]:
    """lambda_min(K_l), K_l = F_l F_l^T / M, per layer (float64; `feature_eigenvalue`).

    X: (L + 1, n, d) states at the layer boundaries. Exactly 0 when M < n (rank of F_l at most M).
    """
    if net.M < X.shape[1]:
        return [Eigenvalue(0.0, 0.0)] * net.L
    return [feature_eigenvalue(net, X, l, feature_gram(net, X, l, memory_budget), memory_budget, eigh_max_dim)
            for l in range(net.L)]


def _u_gradient(q: EulerQuantities, l: int) -> Tensor:
    """g^i = n dL/dx_{l+1}^i = A_l^{iT} r^i: (n, d)."""
    return torch.einsum("nkd,nk->nd", q.A[l], q.r)


def u_layer_sum(q: EulerQuantities, l: int, gram: Tensor) -> float:
    """sum_ij (g^i . g^j) (F_l F_l^T)_ij from the feature Gram gram: (n, n) of layer l."""
    g = _u_gradient(q, l)
    return float(((gram @ g) * g).sum())


def u_gradient_bound(net: MeanFieldResNet, q: EulerQuantities, spectra: List[Eigenvalue],
                     memory_budget: int = MEMORY_BUDGET, layer_sums: Optional[List[float]] = None) -> dict:
    """The u part of G and its feature-kernel lower bound (Euler ResNet), with g^i = n dL/dx_{l+1}^i = A_l^{iT} r^i:

    G_u = sum_l 1/(L n^2) sum_{ij} (g^i . g^j) K_l[i, j] = sum_l |F_l^T g_l|^2 / (L n^2 M)
        >= sum_l 1/(L n^2) lambda_min(K_l) sum_i |g^i|^2,
    the bound taken with the rigorous lower end of each lambda_min(K_l) (0 below its resolution).
    `layer_sums`: u_layer_sum of every layer, when the caller has the feature Grams; else from F_l in blocks.
    """
    n, L, M = q.r.shape[0], net.L, net.M
    g = torch.stack([_u_gradient(q, l) for l in range(L)])  # (L, n, d)
    if layer_sums is None:
        cols = particle_chunks(M, 8 * (2 * n + net.d), memory_budget)
        layer_sums = [sum(float((net.sigma(q.Z.chunk(l, c)).T @ g[l]).pow(2).sum()) for c in cols) for l in range(L)]
    lower = torch.tensor([e.lower for e in spectra], dtype=g.dtype, device=g.device)
    bound = ((lower * g.pow(2).sum((1, 2))).sum() / (L * n * n)).item()
    return {"grad_norm2_u": sum(layer_sums) / (L * n * n * M), "grad_norm2_u_lower": bound}
