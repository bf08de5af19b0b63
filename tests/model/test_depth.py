"""The depth-mobile model against brute force: finite differences, quadrature, the layered model's exact
solution, and the two gradient flows' invariants. All in float64, one thread."""
import math

import pytest
import torch

from cotresnet.diagnostics.depth import depth_effective_layers, depth_histogram, depth_max_gap, depth_w2_to_uniform
from cotresnet.model.depth import (
    KERNELS,
    DepthMobileResNet,
    flow_step,
    fold_depth,
    layer_grid_depths,
    reflected_kernel,
    with_grid_depths,
)
from cotresnet.model.spec import NetworkSpec
from helpers import central_difference

torch.set_num_threads(1)
F64 = torch.float64
KERNEL_NAMES = sorted(KERNELS)


def layered_particles(L, M, d, seed, scale_u=1.5):
    g = torch.Generator().manual_seed(seed)
    return {"u": scale_u * torch.randn(L, M, d, generator=g, dtype=F64),
            "w": torch.randn(L, M, d, generator=g, dtype=F64) / math.sqrt(d),
            "b": 0.5 * torch.randn(L, M, generator=g, dtype=F64)}


def fixed(d, d_in=2, d_out=2):
    return torch.eye(d, d_in, dtype=F64), torch.eye(d_out, d, dtype=F64)


def inputs(N, d_in=2, seed=1):
    return torch.randn(N, d_in, generator=torch.Generator().manual_seed(seed), dtype=F64)


def layered_exact(p, E, R, x, act=torch.tanh, n=400):
    """The layered model, dX/ds = (1/M) sum_m phi(X, theta_{l(s), m}), by classical rk4 with n steps per layer."""
    L, M, _ = p["u"].shape
    X, dt = x @ E.T, 1.0 / (L * n)
    for l in range(L):
        f = lambda X: act(X @ p["w"][l].T + p["b"][l]) @ p["u"][l] / M
        for _ in range(n):
            k1 = f(X)
            k2 = f(X + dt / 2 * k1)
            k3 = f(X + dt / 2 * k2)
            k4 = f(X + dt * k3)
            X = X + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return X @ R.T


def depth_net(p, E, R, h, kernel="gaussian", integrator="rk4", substeps=8, **spec):
    """A DepthMobileResNet of particles p (with depths s: (L, M)) through its NetworkSpec, float64."""
    L, M, d = p["u"].shape
    s = NetworkSpec(L=L, M=M, d=d, d_in=E.shape[1], d_out=R.shape[0], integrator=integrator, substeps=substeps,
                    dtype="float64", depth_kernel=kernel, bandwidth=h, **spec)
    return DepthMobileResNet(p, s, E, R)


def small_net(kernel, integrator="rk4", h=0.08, steps=48, seed=0, **kw):
    """J = 6 particles at random depths, two of them close enough to 0 and 1 for the reflection to act."""
    p = layered_particles(3, 2, 2, seed)
    s = torch.rand(6, generator=torch.Generator().manual_seed(seed + 10), dtype=F64)
    s[0], s[-1] = 0.02, 0.985
    return depth_net({**p, "s": s.reshape(3, 2)}, *fixed(2), h, kernel, integrator, steps // 3, **kw)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("h", [0.02, 0.1, 0.4, 1.3])
def test_reflected_kernel_integrates_to_one(kernel, h):
    sj = torch.tensor([0.0, 0.004, 0.03, 0.5, 0.97, 0.999, 1.0], dtype=F64)
    s = torch.linspace(0, 1, 40001, dtype=F64)
    # the reflected kernel is even about 0 and 1, so the trapezoid rule converges fast
    mass = torch.trapezoid(reflected_kernel(s, sj, h, kernel), s, dim=0)
    torch.testing.assert_close(mass, torch.ones_like(mass), rtol=0, atol=1e-10)


@pytest.mark.parametrize("h", [0.05, 0.22, 0.45, 1.3])
def test_gaussian_images_lose_less_than_eps(h):
    sj = torch.tensor([0.0, 0.3, 0.999], dtype=F64)
    s = torch.linspace(0, 1, 101, dtype=F64)
    shifts = 2.0 * torch.arange(-30, 31, dtype=F64)
    z = torch.cat([s[:, None, None] - sj[:, None] - shifts, s[:, None, None] + sj[:, None] - shifts], -1) / h
    brute = (torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)).sum(-1) / h
    k = reflected_kernel(s, sj, h, "gaussian")
    # a few ulps of summation order; images for a 1 h radius instead of 9 h would lose 1e-5 at h = 0.45
    assert (k - brute).abs().max() <= 1e-15 * brute.max()


def test_fold_depth_is_identity_on_unit_interval_and_reflects_outside():
    s = torch.rand(1000, dtype=F64)
    assert torch.equal(fold_depth(s), s)
    torch.testing.assert_close(fold_depth(-s), s, rtol=0, atol=1e-15)
    torch.testing.assert_close(fold_depth(2 - s), s, rtol=0, atol=1e-15)
    torch.testing.assert_close(fold_depth(s + 4), s, rtol=0, atol=1e-14)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("integrator", ["rk4", "euler"])
def test_gradients_match_central_differences(kernel, integrator):
    net = small_net(kernel, integrator)
    x, y = inputs(5), inputs(5, seed=2)
    grads = torch.autograd.grad(net.risk(x, y), [net.s, net.u, net.w, net.b])
    for p, g in zip([net.s, net.u, net.w, net.b], grads):
        for i in range(min(p.numel(), 6)):
            fd = central_difference(lambda: net.risk(x, y).item(), p.data.view(-1), i)
            assert abs(g.view(-1)[i].item() - fd) <= 1e-6 * max(1.0, abs(fd)), (kernel, i, g.view(-1)[i], fd)
    assert grads[0].abs().min() > 0  # every depth gradient is live (and checked above)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_depth_gradient_vanishes_on_the_boundary(kernel):
    net = small_net(kernel)
    with torch.no_grad():
        net.s.view(-1)[0], net.s.view(-1)[-1] = 0.0, 1.0
    (gs,) = torch.autograd.grad(net.risk(inputs(5), inputs(5, seed=2)), net.s)
    gs = gs.reshape(-1)
    assert gs[0].abs() < 1e-15 and gs[-1].abs() < 1e-15 and gs[1:-1].abs().max() > 1e-6


def test_adjoint_gradient_matches_backprop():
    # the adjoint solves the adjoint ODE on the same grid: equal to the discrete gradient up to rk4's error
    x, y = inputs(5), inputs(5, seed=2)
    grads = [torch.autograd.grad(n.risk(x, y), list(n.parameters()))
             for n in (small_net("gaussian", steps=200), small_net("gaussian", steps=200, adjoint=True))]
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=2e-4, atol=1e-9)


def test_grid_depths_and_particles():
    p = layered_particles(3, 4, 2, seed=0)
    net = depth_net(with_grid_depths(p), *fixed(2), h=0.1, substeps=4)
    q = net.particles()
    assert torch.equal(q["s"], torch.tensor([1 / 6, 0.5, 5 / 6], dtype=F64)[:, None].expand(3, 4))
    assert torch.equal(q["u"], p["u"]) and torch.equal(q["b"], p["b"])
    q["s"].zero_(), q["w"].zero_()
    assert net.s.min() > 0 and net.w.abs().min() > 0 and not q["s"].requires_grad
    with pytest.raises(ValueError, match="s None"):
        depth_net(p, *fixed(2), h=0.1)


# ---------------------------------------------------------------- frozen-depth limit

@pytest.fixture(scope="module")
def frozen():
    p = layered_particles(4, 5, 3, seed=0)
    E, R = fixed(3)
    x = inputs(10)
    return p, E, R, x, layered_exact(p, E, R, x)


def _frozen_error(frozen, kernel, integrator, h, substeps):
    p, E, R, x, ref = frozen
    net = depth_net(with_grid_depths(p), E, R, h, kernel, integrator, substeps, rtol=1e-10, atol=1e-12)
    assert torch.equal(net.s.reshape(-1), layer_grid_depths(4, 5))
    with torch.no_grad():
        return (net(x) - ref).abs().max().item()


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("integrator,final", [("rk4", 2e-6), ("euler", 2e-3)])
def test_frozen_depth_tends_to_the_layered_model(frozen, kernel, integrator, final):
    # h halves and the step shrinks 4x: the kernel overlap between layers and the step / h ratio both fall
    errs = [_frozen_error(frozen, kernel, integrator, h, k) for h, k in [(0.1, 8), (0.05, 32), (0.025, 128)]]
    assert errs[0] > errs[1] > errs[2] and errs[2] < final, errs


def test_frozen_depth_is_exact_for_compact_kernels_inside_the_layer(frozen):
    # support h < 1/(2L): a time change maps each bump onto its layer, so only the solver's error remains
    for kernel in ("bump", "triweight"):
        for h in (0.1, 0.05):
            assert _frozen_error(frozen, kernel, "dopri5", h, 1) < 1e-8
    # Gaussian tails overlap the neighbouring layers: the difference falls with h
    errs = [_frozen_error(frozen, "gaussian", "dopri5", h, 1) for h in (0.1, 0.05, 0.025)]
    assert errs[0] > 1e-4 and errs[0] > 10 * errs[1] > 100 * errs[2], errs


# ---------------------------------------------------------------- the two flows

def teacher_task(seed=0, h=0.1, kernel="gaussian", substeps=4):
    """A layered teacher (scale_u 3) on 32 Gaussian inputs, and a student on the layer grid (L 4, M 6, d 3)."""
    E, R = fixed(3)
    make = lambda seed_, scale: depth_net(with_grid_depths(layered_particles(4, 6, 3, seed_, scale)), E, R, h, kernel,
                                          "euler", substeps)
    x = inputs(32, seed=5 + seed)
    with torch.no_grad():
        y = make(100 + seed, 3.0)(x)
    return make(200 + seed, 1.0), x, y


def test_cot_never_moves_depths_and_wasserstein_spreads_the_marginal():
    net, x, y = teacher_task()
    s0 = net.s.detach().clone()
    for _ in range(50):
        flow_step(net, x, y, 0.02, "cot")
    assert torch.equal(net.s, s0)
    grid_w2 = depth_w2_to_uniform(s0)
    torch.testing.assert_close(grid_w2, torch.tensor(1 / (12 * 16), dtype=F64))
    net, x, y = teacher_task()
    for _ in range(200):
        flow_step(net, x, y, 0.02, "wasserstein", kappa=10.0)
    assert net.s.min() >= 0 and net.s.max() <= 1
    # measured: 2.7x the grid value (the marginal first spreads inside the layers, then piles up near 0)
    assert depth_w2_to_uniform(net.s) > 1.5 * grid_w2


def test_fold_keeps_depths_in_the_unit_interval_after_overshoot():
    net, x, y = teacher_task()
    for _ in range(5):
        flow_step(net, x, y, 0.01, "wasserstein", kappa=1e5)
    assert net.s.min() >= 0 and net.s.max() <= 1 and not torch.equal(net.s, layer_grid_depths(4, 6))


@pytest.mark.parametrize("geometry", ["cot", "wasserstein"])
def test_risk_is_non_increasing(geometry):
    net, x, y = teacher_task()
    risks = [flow_step(net, x, y, 0.01, geometry)[0].item() for _ in range(300)]
    assert all(b <= a for a, b in zip(risks, risks[1:])) and risks[-1] < 0.2 * risks[0]


@pytest.mark.parametrize("geometry", ["cot", "wasserstein"])
def test_risk_decrease_rate_is_minus_G(geometry):
    rel = []
    for dt in (1e-3, 1e-4):
        net, x, y = teacher_task()
        r0, G = flow_step(net, x, y, dt, geometry, kappa=2.0)
        r1 = net.risk(x, y).detach()
        rel.append(abs(((r1 - r0) / dt + G) / G).item())
    assert rel[0] < 0.05 and 5 < rel[0] / rel[1] < 20, rel  # O(dt)


def test_flow_step_rejects_unknown_geometry():
    net, x, y = teacher_task()
    with pytest.raises(ValueError):
        flow_step(net, x, y, 0.1, "fisher-rao")


# ---------------------------------------------------------------- depth diagnostics

def test_w2_matches_quadrature_of_the_quantile_formula():
    s = torch.rand(37, generator=torch.Generator().manual_seed(3), dtype=F64)
    K = 37 * 4000
    q = (torch.arange(K, dtype=F64) + 0.5) / K  # midpoint rule: error 1 / (12 K^2) on the quadratic pieces
    Q = torch.sort(s).values[(q * 37).floor().long()]
    torch.testing.assert_close(depth_w2_to_uniform(s), ((Q - q) ** 2).mean(), rtol=1e-9, atol=0)


@pytest.mark.parametrize("L,M", [(1, 3), (4, 6), (16, 128)])
def test_diagnostics_on_the_layer_grid(L, M):
    s = layer_grid_depths(L, M)
    torch.testing.assert_close(depth_w2_to_uniform(s), torch.tensor(1 / (12 * L * L), dtype=F64))
    torch.testing.assert_close(depth_max_gap(s), torch.tensor(1 / L if L > 1 else 0.5, dtype=F64))
    assert depth_effective_layers(s, L).item() == L
    jitter = (torch.rand(L * M, generator=torch.Generator().manual_seed(0), dtype=F64) - 0.5) / (2.1 * L)
    assert depth_effective_layers(s + jitter, L).item() == L
    assert depth_histogram(s, L).tolist() == [M] * L


def test_diagnostics_on_collapse_and_two_clusters():
    L = 8
    collapsed = torch.full((40,), 0.3, dtype=F64)
    assert depth_effective_layers(collapsed, L).item() == 1
    torch.testing.assert_close(depth_max_gap(collapsed), torch.tensor(0.7, dtype=F64))
    torch.testing.assert_close(depth_w2_to_uniform(collapsed), torch.tensor(0.3**2 - 0.3 + 1 / 3, dtype=F64))
    two = torch.cat([torch.full((10,), 0.2, dtype=F64), torch.full((30,), 0.8, dtype=F64)])
    assert depth_effective_layers(two, L).item() == pytest.approx(4 / 3)
    torch.testing.assert_close(depth_max_gap(two), torch.tensor(0.6, dtype=F64))
    # within half a layer the two clusters are one pile
    near = torch.cat([torch.full((10,), 0.2, dtype=F64), torch.full((30,), 0.26, dtype=F64)])
    assert depth_effective_layers(near, L).item() == 1
    assert depth_histogram(torch.tensor([0.0, 0.2, 0.25, 0.999, 1.0], dtype=F64), 4).tolist() == [2, 1, 0, 2]
