"""Diagnostics of depth-mobile particles (model/depth.py): their tangent kernel (an explicit Jacobian, with
the depth columns when the depths move) and the depth marginal's distance to the layers' Lebesgue marginal.
Pure tensor functions, float64 (docs/math.md, section 5)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

from ..model.depth import DepthMobileResNet
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


def tangent_kernel(net: DepthMobileResNet, x: Tensor, kappa: Optional[float]) -> Tensor:
    """K = J Jac Jac^T: (n d_out, n d_out), Jac = d(R X_1(x_i)) / d(theta, sqrt(kappa) s), built row by row by
    backprop; the depth columns only when the depths move (kappa given: the Wasserstein flow), so that
    G = r^T K r / n^2 is the flow's own metric norm of its velocity."""
    params = [net.u, net.w, net.b] + ([net.s] if kappa is not None else [])
    out = net(x).reshape(-1)
    rows = []
    for o in out:
        grads = torch.autograd.grad(o, params, retain_graph=True)
        scaled = [*grads[:3], *(g * kappa**0.5 for g in grads[3:])]
        rows.append(torch.cat([g.reshape(-1) for g in scaled]))
    jac = torch.stack(rows)
    return net.J * jac @ jac.T


def kernel_diagnostics(net: DepthMobileResNet, x: Tensor, y: Tensor, kappa: Optional[float]):
    """diagnostics.KernelDiagnostics of a depth-mobile network on (x, y), float64 (no feature kernels:
    particles at moving depths form no layers)."""
    net64 = net.detached(dtype="float64")
    net64.s.requires_grad_(kappa is not None)
    x, y = x.to(net64.u.device, torch.float64), y.to(net64.u.device, torch.float64)
    K = tangent_kernel(net64, x, kappa)
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

