"""Diagnostics against brute force: autograd, torch.func.jacrev, eigvalsh, exhaustive permutations."""
import itertools
import math

import pytest
import torch
from torch.func import functional_call, jacrev

from cotresnet import diagnostics as D
from test_model import data, make_net


def autograd_G(net, x, y):
    net.zero_grad(set_to_none=True)
    risk = net.risk(x, y)
    risk.backward()
    G = D.grad_norm2([p.grad for p in net.parameters()], net.L, net.M).item()
    net.zero_grad(set_to_none=True)
    return risk.item(), G


def jacrev_kernel(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}
    J = jacrev(lambda p: functional_call(net, p, (x,)).reshape(-1))(params)
    J = torch.cat([J[k].reshape(J[k].shape[0], -1) for k in ("u", "w", "b")], 1)
    return net.L * net.M * J @ J.T


@pytest.mark.parametrize("act", ["tanh", "silu", "gelu", "softplus"])
def test_structured_tangent_kernel_equals_jacrev(act):
    net = make_net(L=4, M=6, d=5, d_in=3, d_out=2, act=act)
    x, _ = data(N=7)
    torch.testing.assert_close(D.tangent_kernel(net, x), jacrev_kernel(net, x), rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("integrator", ["rk4", "dopri5"])
def test_ode_tangent_kernel_equals_explicit_jacobian(integrator):
    # torchdiffeq's autograd.Functions do not support functorch, so the reference is the
    # non-vectorized torch.autograd.functional.jacobian
    net = make_net(L=3, M=4, integrator=integrator, substeps=2)
    x, _ = data(N=5)
    names = ("u", "w", "b")

    def out(u, w, b):
        return functional_call(net, dict(zip(names, (u, w, b))), (x,)).reshape(-1)

    J = torch.autograd.functional.jacobian(out, tuple(getattr(net, k).detach() for k in names))
    J = torch.cat([j.reshape(j.shape[0], -1) for j in J], 1)
    torch.testing.assert_close(D.tangent_kernel(net, x), net.L * net.M * J @ J.T, rtol=1e-9, atol=1e-12)


def test_G_from_kernel_quadratic_form_equals_autograd():
    net = make_net(L=5, M=6)
    x, y = data(N=9)
    risk, G = autograd_G(net, x, y)
    kd = D.kernel_diagnostics(net, x, y)
    assert kd["risk_probe"] == pytest.approx(risk, rel=1e-12)
    assert kd["grad_norm2_probe"] == pytest.approx(G, rel=1e-10)
    assert kd["pl_ratio_probe"] >= kd["pl_lower_bound"] > 0


def test_feature_lambda_min_equals_eigvalsh_and_is_zero_below_n():
    x, y = data(N=6)
    net = make_net(L=3, M=10, d=4)
    q = D.euler_quantities(net, x, y)
    lam = D.feature_lambda_min(net, q["X"])
    for l in range(net.L):
        F = net.sigma(q["Z"][l])
        assert lam[l].item() == pytest.approx(torch.linalg.eigvalsh(F @ F.T / net.M)[0].item(), rel=1e-10)
        assert lam[l].item() == pytest.approx(torch.linalg.svdvals(F)[-1].item() ** 2 / net.M, rel=1e-8)
    narrow = make_net(L=3, M=4, d=4)
    lam0 = D.feature_lambda_min(narrow, D.euler_quantities(narrow, x, y)["X"])
    assert torch.equal(lam0, torch.zeros(3, dtype=torch.float64))
    K = D.feature_kernels(narrow, D.euler_quantities(narrow, x, y)["X"])
    assert torch.linalg.eigvalsh(K)[:, 0].abs().max() < 1e-14


def test_u_gradient_identity_holds_exactly_and_bounds_G():
    x, y = data(N=6)
    net = make_net(L=4, M=9, d=4)
    net.zero_grad(set_to_none=True)
    net.risk(x, y).backward()
    G_u = net.L * net.M * net.u.grad.pow(2).sum().item()
    _, G = autograd_G(net, x, y)
    ident = D.u_gradient_identity(net, x, y)
    assert ident["grad_norm2_u"] == pytest.approx(G_u, rel=1e-11)
    assert G >= ident["grad_norm2_u"] >= ident["grad_norm2_u_lower"] > 0


def brute_force_cot(p, q):
    a, b = D.flatten_particles(p), D.flatten_particles(q)
    L, M = a.shape[:2]
    total = 0.0
    for l in range(L):
        best = min(sum((a[l, m] - b[l, s[m]]).pow(2).sum().item() for m in range(M)) / M
                   for s in itertools.permutations(range(M)))
        total += best
    return math.sqrt(total / L)


@pytest.mark.parametrize("M", [1, 2, 4, 6])
def test_exact_cot_distance_equals_permutation_brute_force_and_sits_between_bounds(M):
    from cotresnet.model import init_particles
    p = init_particles(3, M, 2, "iid", 1.0, 1.0, 1.0, seed=0, dtype=torch.float64)
    q = init_particles(3, M, 2, "iid", 1.0, 1.0, 1.0, seed=1, dtype=torch.float64)
    exact = D.cot_distance(p, q)
    assert exact == pytest.approx(brute_force_cot(p, q), rel=1e-12, abs=1e-14)
    assert D.cot_distance_lower(p, q) - 1e-12 <= exact <= D.cot_distance_upper(p, q) + 1e-12
    # permuting particles within a layer does not move the measure
    perm = torch.randperm(M)
    assert D.cot_distance(p, {k: v[:, perm] for k, v in p.items()}) == pytest.approx(0.0, abs=1e-7)


def test_exact_cot_distance_is_at_most_the_path_length():
    from cotresnet.model import init_particles
    p0 = init_particles(2, 5, 3, "iid", 1.0, 1.0, 1.0, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    path, p = 0.0, p0
    for _ in range(20):
        nxt = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.items()}
        path += D.cot_step_length(nxt, p)
        p = nxt
    assert D.cot_distance(p, p0) <= D.cot_distance_upper(p, p0) <= path


def test_certificate_radius():
    c = D.certificate(risk0=0.5, lambda0=2.0, n=4)
    assert c["c0"] == 0.5 and c["certified_radius"] == pytest.approx(2.0)
    assert D.certificate(1.0, 0.0, 4)["certified_radius"] == math.inf
