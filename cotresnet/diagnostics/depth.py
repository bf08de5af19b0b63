"""Diagnostics of depth-mobile particles (model/depth.py): their tangent kernel (an explicit Jacobian, with
the depth columns when the depths move; for fixed steps built from the fused node's stages for all rows at
once) and the depth marginal's distance to the layers' Lebesgue marginal. Pure tensor functions, float64
(docs/math.md, section 5)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ..model.activations import ACTIVATION_FUNCTIONS, ACTIVATION_VJP
from ..model.depth import DepthMobileResNet
from ..model.depth_fused import TABLEAUX, integrate, reverse_stages, stage_times
from ..model.depth_kernels import reflected_kernel_and_slope
from .kernels import MEMORY_BUDGET, particle_chunks
from .measures import KernelDiagnostics
from .spectra import kernel_spectrum


def depth_w2_to_uniform(s: Tensor) -> Tensor:
    """W_2^2 (squared) between the atoms (1/J) sum_j delta_{s_j} and Lebesgue on [0, 1], float64: 0-dim.

    int_0^1 |Q(q) - q|^2 dq with Q = s_(i) on ((i - 1)/J, i/J]; each piece integrates to
    (s_(i) - c_i)^2 / J + 1 / (12 J^3), c_i = (i - 1/2)/J. On the layer grid (M atoms at each (l + 1/2)/L)
    it is 1 / (12 L^2).
    """
    x = torch.sort(s.detach().to(torch.float64).reshape(-1)).values
    J = x.numel()
    c = (torch.arange(J, dtype=torch.float64, device=x.device) + 0.5) / J
    return (x - c).pow(2).mean() + 1.0 / (12.0 * J * J)


def depth_max_gap(s: Tensor) -> Tensor:
    """The largest gap between consecutive sorted depths, the ends 0 and 1 included: 0-dim float64.
    Layer grid: 1/L; all depths at p: max(p, 1 - p)."""
    x = torch.sort(s.detach().to(torch.float64).reshape(-1)).values
    ends = x.new_tensor([0.0]), x.new_tensor([1.0])
    return torch.cat([ends[0], x, ends[1]]).diff().max()


def depth_effective_layers(s: Tensor, L: int) -> Tensor:
    """L_eff = 1 / max_a mu([a, a + 1/(2L))), mu = (1/J) sum_j delta_{s_j}: 0-dim float64.

    The largest fraction of depths in any half-open window half a layer wide, as a number of layers: the
    layer grid gives L (and keeps giving L under any jitter below 1/(4L): a window of width 1/L would drop
    to about L/2 as soon as one depth moves, since adjacent grid depths are exactly 1/L apart), all depths
    within 1/(2L) give 1, two clusters further apart with fractions p, 1 - p give 1 / max(p, 1 - p), an
    even spread of many depths about 2L. The max is attained at windows starting at a depth.
    """
    x = torch.sort(s.detach().to(torch.float64).reshape(-1)).values
    counts = torch.searchsorted(x, x + 0.5 / L) - torch.arange(x.numel(), device=x.device)
    return x.numel() / counts.max().to(torch.float64)


def depth_histogram(s: Tensor, bins: int) -> Tensor:
    """Counts of depths in `bins` equal bins of [0, 1] (s = 1 in the last): (bins,) long."""
    idx = (s.detach().to(torch.float64).reshape(-1) * bins).floor().long().clamp(0, bins - 1)
    return torch.bincount(idx, minlength=bins)


def _jacobian_rows(net: DepthMobileResNet, x: Tensor, kappa: Optional[float]) -> Tensor:
    """Jac = d(R X_1(x_i)) / d(theta[, sqrt(kappa) s]): (n d_out, J (2d + 1 [+ 1])), one backward pass per row:
    the only way through an adaptive solver (dopri5)."""
    params = [net.u, net.w, net.b] + ([net.s] if kappa is not None else [])
    out = net(x).reshape(-1)
    rows = []
    for o in out:
        grads = torch.autograd.grad(o, params, retain_graph=True)
        scaled = [*grads[:3], *(g * kappa**0.5 for g in grads[3:])]
        rows.append(torch.cat([g.reshape(-1) for g in scaled]))
    return torch.stack(rows)


def _stage_bytes(net: DepthMobileResNet) -> int:
    """float64 bytes stage_jacobian holds per sample: of every stage sigma(Z) or Z, H, sigma'(Z), c H (or
    dc H) and dZ of every output; the sample's Jacobian blocks, with a copy of each."""
    sp = net.spec
    n_stages = sp.L * sp.substeps * len(TABLEAUX[sp.integrator].c)
    return 8 * (n_stages * net.J * (4 + sp.d_out) + 2 * sp.d_out * net.J * (3 * sp.d + 2))


def stage_jacobian(net: DepthMobileResNet, x: Tensor, kappa: Optional[float]) -> Tensor:
    """Jac = d(R X_1(x_i)) / d(u, w, b[, sqrt(kappa) s]): (n, d_out, J (2d + 1 [+ 1])), columns u^T, w^T
    (coordinate by coordinate), b, s, for a fixed-step network (euler, rk4). The fused node's stages
    (model/depth_fused.py) run forward once, then backward for every sample i and output o at once from the
    cotangent R_o on sample i alone (samples do not interact), and each parameter's entries are summed over
    the stages t as batched products (G_t: (n, d_out, d) = dR X_1/dK_t; c, dc: the stage weights and their
    depth derivatives; every particle at every stage, zero weights included):
        Jac_u[io, j] = sum_t c_tj H_t[i, j] G_t[io],   Jac_w[io, j] = sum_t dZ_t[io, j] Y_t[i],
        Jac_b[io, j] = sum_t dZ_t[io, j],               Jac_s[io, j] = u_j . sum_t dc_tj H_t[i, j] G_t[io].
    """
    sp, J, n = net.spec, net.J, x.shape[0]
    tableau, name = TABLEAUX[sp.integrator], sp.activation
    saves_output, vjp = ACTIVATION_VJP[name]
    uT, wT = (p.detach().reshape(J, sp.d).t().contiguous() for p in (net.u, net.w))
    b, s = net.b.detach().reshape(J), net.s.detach().reshape(J)
    times, dt = stage_times(sp.L * sp.substeps, sp.integrator, x.dtype, x.device)
    k, dk = reflected_kernel_and_slope(times, s, sp.bandwidth, sp.depth_kernel)
    c, dc = k * (dt / J)[:, None], dk * (dt / J)[:, None]
    cuT = c[:, None, :] * uT
    n_stages = c.shape[0]
    _, Ys, kept = integrate(x @ net.embedding.T, wT, b, cuT, None, tableau, name)
    kept = kept.view(n_stages, n, J)
    H = kept if saves_output else ACTIVATION_FUNCTIONS[name](kept)
    slope = vjp(torch.ones_like(kept), kept)  # sigma'(Z) of every stage
    G, dZ = x.new_empty(n_stages, n, sp.d_out, sp.d), x.new_empty(n_stages, n, sp.d_out, J)

    def stage_vjp(j: int, Gq: Tensor, acc: Optional[Tensor]) -> Tensor:
        G[j] = Gq
        torch.mul(Gq @ cuT[j], slope[j, :, None, :], out=dZ[j])
        step = dZ[j] @ wT.t()
        return step if acc is None else acc + step

    reverse_stages(net.readout.expand(n, sp.d_out, sp.d), n_stages, tableau, stage_vjp)
    # sums over the stages as one batched product per block, sample by sample, on views of the stage-major
    # tensors (no copy): (d_out d, stages) @ (stages, J) and (d, stages) @ (stages, d_out J)
    GT = G.permute(1, 2, 3, 0).reshape(n, sp.d_out * sp.d, n_stages)
    jac_u = torch.bmm(GT, (c[:, None, :] * H).transpose(0, 1)).view(n, sp.d_out, -1)
    jac_w = torch.bmm(Ys.permute(1, 2, 0), dZ.transpose(0, 1).reshape(n, n_stages, -1))
    parts = [jac_u, jac_w.view(n, sp.d, sp.d_out, J).transpose(1, 2).reshape(n, sp.d_out, -1), dZ.sum(0)]
    if kappa is not None:
        jac_dc = torch.bmm(GT, (dc[:, None, :] * H).transpose(0, 1)).view(n, sp.d_out, sp.d, J)
        parts.append(kappa**0.5 * (jac_dc * uT).sum(2))
    return torch.cat(parts, -1)


def tangent_kernel(net: DepthMobileResNet, x: Tensor, kappa: Optional[float], memory_budget: int = MEMORY_BUDGET) -> Tensor:
    """K = J Jac Jac^T: (n d_out, n d_out), Jac = d(R X_1(x_i)) / d(theta, sqrt(kappa) s), the depth columns only
    when the depths move (kappa given: the Wasserstein flow), so that G = r^T K r / n^2 is the flow's own
    metric norm of its velocity. Fixed steps (euler, rk4, with or without the adjoint: the same forward map):
    stage_jacobian on as many samples at a time as `memory_budget` bytes allow; dopri5: row by row."""
    if net.spec.integrator not in TABLEAUX:
        jac = _jacobian_rows(net, x, kappa)
    else:
        chunks = particle_chunks(x.shape[0], _stage_bytes(net), memory_budget)
        jac = torch.cat([stage_jacobian(net, x[rows], kappa).flatten(0, 1) for rows in chunks])
    return net.J * jac @ jac.T


def kernel_diagnostics(net: DepthMobileResNet, x: Tensor, y: Tensor, kappa: Optional[float],
                       memory_budget: int = MEMORY_BUDGET):
    """diagnostics.KernelDiagnostics of a depth-mobile network on (x, y), float64 (no feature kernels:
    particles at moving depths form no layers); the tangent kernel built within `memory_budget` bytes."""
    net64 = net.detached(dtype="float64")
    net64.s.requires_grad_(kappa is not None)
    x, y = x.to(net64.u.device, torch.float64), y.to(net64.u.device, torch.float64)
    K = tangent_kernel(net64, x, kappa, memory_budget)
    with torch.no_grad():
        r = (net64(x) - y).reshape(-1)
    lam_min, lam_max, spectrum = kernel_spectrum(K, r)
    n = x.shape[0]
    return KernelDiagnostics(n=n, lambda_min=lam_min, lambda_max=lam_max, risk=0.5 * r.pow(2).sum().item() / n,
                             grad_norm2=(r @ K @ r).item() / n**2, spectrum=spectrum, feature=[], u_bound=None)


def depth_row(s: Tensor, L: int) -> Dict[str, float]:
    """The depth marginal's metrics.csv columns: its W_2 distance to Lebesgue (not squared), the largest
    gap, the effective number of layers."""
    return {"depth_w2_uniform": depth_w2_to_uniform(s).sqrt().item(), "depth_max_gap": depth_max_gap(s).item(),
            "depth_effective_layers": depth_effective_layers(s, L).item()}


def joint_distances(now: Dict[str, Tensor], init: Dict[str, Tensor], kappa: float = 1.0) -> Dict[str, Optional[float]]:
    """W_2 between the depth-mobile particles at t and at 0 as clouds of (sqrt(kappa) s_j, theta_j) in
    R^{2d+2}: the metric of the Wasserstein flow, which moves depths too (W_COT compares theta layer by layer
    and ignores the depths; the path length of a run whose depths move includes them). Exact by assignment up
    to transport.EXACT_MAX_M particles, a certified bracket refined to measures.DISTANCE_TARGET above."""
    from .measures import DISTANCE_TARGET
    from .transport import w2_bracket

    a, b = (torch.cat([kappa**0.5 * x["s"].reshape(-1, 1), x["u"].reshape(-1, x["u"].shape[-1]),
                       x["w"].reshape(-1, x["w"].shape[-1]), x["b"].reshape(-1, 1)], 1) for x in (now, init))
    br = w2_bracket(a, b, target=DISTANCE_TARGET)
    lower, upper = max(br.lower2, 0.0) ** 0.5, br.upper2**0.5
    return {"w2_dist_init": upper if br.exact else None, "w2_dist_init_lower": lower, "w2_dist_init_upper": upper}

