"""The fused depth-mobile node (model/depth_fused.py) against torchdiffeq's steps under plain autograd
(model.backprop=autograd: the same discretization), finite differences (gradcheck), brute-force active ranges,
and the kernel slopes against autograd. All in float64 unless said, one thread."""
import math

import pytest
import torch

from cotresnet.job.memory import saved_tensor_bytes
from cotresnet.model.activations import ACTIVATION_FUNCTIONS
from cotresnet.model.depth import DepthMobileResNet, with_grid_depths
from cotresnet.model.depth_fused import TABLEAUX, active_ranges, depth_flow, stage_times
from cotresnet.model.depth_kernels import (
    KERNELS,
    KERNELS_AND_SLOPES,
    fold_depth,
    reflected_kernel,
    reflected_kernel_and_slope,
)
from cotresnet.model.spec import NetworkSpec

torch.set_num_threads(1)
F64 = torch.float64
KERNEL_NAMES = sorted(KERNELS)


def particles(L, M, d, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return {"u": 1.5 * torch.randn(L, M, d, generator=g, dtype=F64).to(dtype),
            "w": (torch.randn(L, M, d, generator=g, dtype=F64) / math.sqrt(d)).to(dtype),
            "b": (0.5 * torch.randn(L, M, generator=g, dtype=F64)).to(dtype)}


def random_depths(L, M, seed, dtype=F64):
    """Depths anywhere, two near the ends (the reflection acts) and two outside [0, 1] (the fold acts, as
    after an optimizer step that overshoots): (L, M)."""
    s = torch.rand(L * M, generator=torch.Generator().manual_seed(seed + 10), dtype=F64)
    s[0], s[1], s[-2], s[-1] = 0.02, -0.03, 0.985, 1.04
    return s.reshape(L, M).to(dtype)


def make(kernel="gaussian", integrator="euler", act="tanh", L=3, M=2, d=2, h=0.08, substeps=16, seed=0,
         dtype=F64, grid=False):
    """A depth-mobile network (fused for euler and rk4) and its reference: the same particles through
    torchdiffeq's steps under plain autograd."""
    p = particles(L, M, d, seed, dtype)
    p = with_grid_depths(p) if grid else {**p, "s": random_depths(L, M, seed, dtype)}
    spec = NetworkSpec(L=L, M=M, d=d, d_in=2, d_out=2, activation=act, integrator=integrator, substeps=substeps,
                       dtype=str(dtype).replace("torch.", ""), depth_kernel=kernel, bandwidth=h)
    E, R = torch.eye(d, 2, dtype=dtype), torch.eye(2, d, dtype=dtype)
    net = DepthMobileResNet(p, spec, E, R)
    return net, net.detached(backprop="autograd")


def inputs(N, seed=1, dtype=F64):
    return torch.randn(N, 2, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


# ---------------------------------------------------------------- kernel slopes

@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_base_kernel_slopes_equal_autograd(kernel):
    z = torch.cat([torch.linspace(-1.5, 1.5, 3001, dtype=F64), torch.tensor([-0.999999, 0.999999], dtype=F64)])
    z.requires_grad_()
    base = KERNELS[kernel][0]
    (ref,) = torch.autograd.grad(base(z).sum(), z)
    K, dK = KERNELS_AND_SLOPES[kernel](z.detach())
    assert torch.equal(K, base(z.detach()))
    torch.testing.assert_close(dK, ref, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("h", [0.05, 0.3, 1.0])
def test_reflected_kernel_slope_equals_autograd(kernel, h):
    # depths inside, on and outside [0, 1]: the fold mirrors 1.3 and -0.2 (fold' = -1), shifts 2.6 and -1.7
    sj = torch.tensor([0.0, 0.01, 0.3, 0.97, 1.0, -0.2, 1.3, 2.6, -1.7], dtype=F64)
    s = torch.linspace(0, 1, 201, dtype=F64)
    every = sj.expand(s.shape[0], -1).clone().requires_grad_()  # one depth per entry: elementwise dk/ds_j
    (ref,) = torch.autograd.grad(reflected_kernel(s, every, h, kernel).sum(), every)
    k, dk = reflected_kernel_and_slope(s, sj, h, kernel)
    assert torch.equal(k, reflected_kernel(s, sj, h, kernel))
    torch.testing.assert_close(dk, ref, rtol=1e-12, atol=1e-12 * ref.abs().max().item())
    # the mirror images of 0.2 and 0.7: the same kernel, the slope of opposite sign
    k_in, dk_in = reflected_kernel_and_slope(s, torch.tensor([0.2, 0.7], dtype=F64), h, kernel)
    torch.testing.assert_close(k[:, 5:7], k_in, rtol=1e-12, atol=1e-12 * k_in.max().item())
    torch.testing.assert_close(dk[:, 5:7], -dk_in, rtol=1e-9, atol=1e-9 * dk_in.abs().max().item())
    assert dk_in.abs().max() > 0


# ---------------------------------------------------------------- the node against autograd

@pytest.mark.filterwarnings("ignore:activation=relu")
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("integrator", ["euler", "rk4"])
@pytest.mark.parametrize("act", sorted(ACTIVATION_FUNCTIONS))
def test_forward_and_gradients_equal_autograd_through_torchdiffeq(kernel, integrator, act):
    net, ref = make(kernel, integrator, act)
    y = inputs(5, seed=2)
    grads = []
    for n in (net, ref):
        x = inputs(5).requires_grad_()  # dRisk/dX0 reaches x through the embedding
        risk = n.risk(x, y)
        grads.append((risk, torch.autograd.grad(risk, [x, n.u, n.w, n.b, n.s])))
    (risk, got), (risk_ref, want) = grads
    torch.testing.assert_close(risk, risk_ref, rtol=1e-13, atol=0)
    for g, g_ref in zip(got, want):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12 * g_ref.abs().max().item())
        assert g.is_contiguous()
    assert want[-1].abs().min() > 0  # every depth gradient is live (two depths outside [0, 1])


def test_frozen_depths_get_no_gradient_and_theta_the_same():
    net, ref = make("bump", "rk4")
    x, y = inputs(5), inputs(5, seed=2)
    got, want = ([n.s.requires_grad_(False), torch.autograd.grad(n.risk(x, y), [n.u, n.w, n.b])][1] for n in (net, ref))
    for g, g_ref in zip(got, want):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12 * g_ref.abs().max().item())


def test_float32_forward_equals_torchdiffeq_to_round_off():
    net, ref = make("gaussian", "euler", L=4, M=8, d=3, h=0.1, substeps=4, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(net(inputs(32, dtype=torch.float32)), ref(inputs(32, dtype=torch.float32)),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,integrator,act", [("gaussian", "euler", "tanh"), ("bump", "rk4", "silu"),
                                                   ("triweight", "euler", "softplus"), ("bump", "euler", "tanh")])
def test_node_passes_gradcheck(kernel, integrator, act):
    g = torch.Generator().manual_seed(3)
    J, d = 6, 2
    X0, u, w = (torch.randn(*shape, generator=g, dtype=F64) for shape in ((3, d), (J, d), (J, d)))
    b = torch.randn(J, generator=g, dtype=F64)
    s = torch.tensor([0.03, 0.2, 0.45, 0.5, 0.9, 1.02], dtype=F64)
    args = [t.requires_grad_() for t in (X0, u, w, b, s)]
    flow = lambda *a: depth_flow(*a, 0.15, kernel, act, 12, integrator)  # noqa: E731
    assert torch.autograd.gradcheck(flow, args, eps=1e-6, atol=1e-8)


# ---------------------------------------------------------------- active ranges

def test_stages_multiply_exactly_the_active_range_of_sorted_depths():
    # compact kernels of half-width 0.05 about the depths 1/6, 1/2, 5/6: many stages see no particle at all
    net, ref = make("bump", "euler", L=3, M=4, h=0.05, substeps=20, grid=True)
    with torch.no_grad():
        net.s.add_(0.02 * torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=F64))
        ref.s.copy_(net.s)
    times, _ = stage_times(60, "euler")
    s = net.s.detach().reshape(-1)
    order = torch.argsort(fold_depth(s))
    active = reflected_kernel(times, s, 0.05, "bump")[:, order] != 0
    ranges = active_ranges(active)
    for row, (lo, hi) in zip(active, ranges):
        on = row.nonzero().squeeze(1).tolist()
        assert (lo, hi) == ((on[0], on[-1] + 1) if on else (0, 0))
        assert on == list(range(lo, hi))  # contiguous: the range holds no particle of weight 0
    widths = [hi - lo for lo, hi in ranges]
    assert min(widths) == 0 and sum(widths) < 0.4 * len(ranges) * 12
    x, y = inputs(5), inputs(5, seed=2)
    got, want = (torch.autograd.grad(n.risk(x, y), [n.u, n.w, n.b, n.s]) for n in (net, ref))
    for g, g_ref in zip(got, want):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12 * g_ref.abs().max().item())


# ---------------------------------------------------------------- memory

@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_node_keeps_its_stages_only_and_less_than_autograd(method):
    net, ref = make("gaussian", method, L=2, M=16, d=3, h=0.3, substeps=4)
    N, J, d = 20, net.J, 3
    n = 2 * 4 * len(TABLEAUX[method].c)
    X0 = inputs(N) @ net.embedding.T
    params = [net.u, net.w, net.b, net.s]
    kept = saved_tensor_bytes(lambda: net.flow(X0), exclude=params)
    plain = saved_tensor_bytes(lambda: ref.flow(X0), exclude=[ref.u, ref.w, ref.b, ref.s])
    # c and dc of every stage and particle, the stage inputs, one sigma(Z) per stage; no state, no graph
    assert kept == 8 * (2 * n * J + n * N * d + n * N * J)
    assert kept < 0.6 * plain
