"""Diagnostics against brute force: autograd, torch.func.jacrev, eigvalsh, SVD, exhaustive permutations."""
import itertools
import math

import pytest
import torch
from torch.func import functional_call, jacrev

from cotresnet import diagnostics as D
from cotresnet.diagnostics import kernels as K
from cotresnet.diagnostics import spectra as S
from cotresnet.model.particles import init_particles
from cotresnet.record import Certificate
from helpers import data, make_net


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
    torch.testing.assert_close(K.tangent_kernel(net, x), jacrev_kernel(net, x), rtol=1e-11, atol=1e-13)


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
    torch.testing.assert_close(K.tangent_kernel(net, x), net.L * net.M * J @ J.T, rtol=1e-9, atol=1e-12)


def test_G_from_kernel_quadratic_form_equals_autograd_and_the_bound_holds():
    net = make_net(L=5, M=6)
    x, y = data(N=9)
    risk, G = autograd_G(net, x, y)
    kd = D.kernel_diagnostics(net, x, y)
    assert kd.risk == pytest.approx(risk, rel=1e-12)
    assert kd.grad_norm2 == pytest.approx(G, rel=1e-10)
    row = kd.row()
    assert row["pl_ratio_probe"] >= row["pl_lower_bound"] > 0
    assert row["rate_over_bound"] == pytest.approx(row["pl_ratio_probe"] / row["pl_lower_bound"])


def test_eigenvalue_resolution_is_n_eps_norm_and_unresolved_values_are_not_reported():
    e = S.gram_eigenvalue(3e-14, 10.0, 100)
    assert e.resolution == pytest.approx(100 * torch.finfo(torch.float64).eps * 10.0)
    assert not e.resolved and e.reported is None and e.lower == 0.0
    ok = S.gram_eigenvalue(1e-6, 10.0, 100)
    assert ok.resolved and ok.reported == 1e-6 and ok.lower == pytest.approx(1e-6 - ok.resolution)
    assert S.Eigenvalue(0.0, 0.0).resolved  # a structural zero (rank) is exact


def test_tiny_feature_eigenvalue_is_resolved_from_singular_values_where_eigvalsh_fails():
    # F = U diag(s) V^T with a known sigma_min 1e-9 sigma_max: lambda_min(F F^T / M) = 1e-18 exactly
    n, M = 40, 64
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(M, n, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -9, n, dtype=torch.float64)
    F = U @ torch.diag(s) @ V.T
    exact = 1e-18 / M
    e = K.singular_value_eigenvalue(F, M)
    assert e.resolved and e.value == pytest.approx(exact, rel=1e-3)
    gram = torch.linalg.eigvalsh(F @ F.T / M)[0].item()
    assert abs(gram - exact) > 10 * exact  # the Gram form cannot see it: below n eps ||K||
    assert not S.gram_eigenvalue(gram, torch.linalg.eigvalsh(F @ F.T / M)[-1].item(), n).resolved


def test_nearly_collinear_particles_give_a_tiny_resolved_feature_eigenvalue():
    # two particles of every layer nearly equal: F_l has two nearly equal columns, so with M = n
    # lambda_min(K_l) ~ (difference)^2 / M, far below eigvalsh's floor and resolved by the SVD
    net = make_net(L=2, M=6, d=4, act="softplus")
    x, y = data(N=6)
    with torch.no_grad():
        net.w[:, 1] = net.w[:, 0] + 1e-7
        net.b[:, 1] = net.b[:, 0]
    q = K.euler_quantities(net, x, y)
    spectra = K.feature_spectra(net, q.X)
    for l, e in enumerate(spectra):
        F = net.sigma(q.Z[l])
        assert e.resolved and e.value == pytest.approx(torch.linalg.svdvals(F)[-1].item() ** 2 / net.M, rel=1e-6)
        assert e.value < 1e-13


@pytest.mark.parametrize("gap", [1e-3, 1e-6, 1e-8])
def test_a_feature_eigenvalue_from_singular_values_carries_its_accuracy_and_a_proven_lower_bound(gap):
    """Against mpmath at 50 digits: |value - exact| <= accuracy and lower <= exact, where the accuracy
    2 sigma_min ds / M exceeds the resolution ds^2 / M by orders of magnitude (the audit's case)."""
    import mpmath

    g = torch.Generator().manual_seed(3)
    F = torch.randn(5, 40, generator=g, dtype=torch.float64)
    F[1] = F[0] + gap * torch.randn(40, generator=g, dtype=torch.float64)  # two nearly equal samples
    e = K.singular_value_eigenvalue(F, 40)
    mpmath.mp.dps = 50
    exact = min(mpmath.eigsy(mpmath.matrix(F.tolist()) * mpmath.matrix(F.T.tolist()) / 40)[0])
    assert abs(e.value - float(exact)) <= e.accuracy and e.lower <= float(exact) <= e.value + e.accuracy
    assert e.resolved and e.accuracy > 100 * e.resolution
    assert e.lower == pytest.approx(max(e.value ** 0.5 - (e.resolution * 40) ** 0.5 / 40 ** 0.5, 0) ** 2, rel=1e-9)


def test_feature_eigenvalues_equal_eigvalsh_when_resolvable_and_are_zero_below_n():
    x, y = data(N=6)
    net = make_net(L=3, M=10, d=4)
    q = K.euler_quantities(net, x, y)
    for l, e in enumerate(K.feature_spectra(net, q.X)):
        F = net.sigma(q.Z[l])
        assert e.value == pytest.approx(torch.linalg.eigvalsh(F @ F.T / net.M)[0].item(), rel=1e-8)
    narrow = make_net(L=3, M=4, d=4)
    assert [e.value for e in K.feature_spectra(narrow, K.euler_quantities(narrow, x, y).X)] == [0.0] * 3


def test_u_gradient_identity_holds_exactly_and_bounds_G():
    x, y = data(N=6)
    net = make_net(L=4, M=9, d=4)
    net.zero_grad(set_to_none=True)
    net.risk(x, y).backward()
    G_u = net.L * net.M * net.u.grad.pow(2).sum().item()
    _, G = autograd_G(net, x, y)
    q = K.euler_quantities(net, x, y)
    bound = K.u_gradient_bound(net, q, K.feature_spectra(net, q.X))
    assert bound["grad_norm2_u"] == pytest.approx(G_u, rel=1e-11)
    assert G >= bound["grad_norm2_u"] >= bound["grad_norm2_u_lower"] > 0


def test_residual_spectrum_shares_sum_to_one_and_match_brute_force():
    net = make_net(L=3, M=8)
    x, y = data(N=10)
    kd = D.kernel_diagnostics(net, x, y)
    Kmat = K.tangent_kernel(net, x)
    lam, V = torch.linalg.eigh(Kmat)
    r = (net(x) - y).detach().reshape(-1)
    share = (V.T @ r) ** 2 / r.pow(2).sum()
    sp = kd.spectrum
    assert sum(s for _, _, s in sp.decades) + sp.unresolved[1] == pytest.approx(1.0, rel=1e-12)
    for k, count, s in sp.decades:
        mask = (lam > kd.lambda_min.resolution) & (lam >= 10.0**k) & (lam < 10.0 ** (k + 1))
        assert count == int(mask.sum()) and s == pytest.approx(share[mask].sum().item(), rel=1e-9, abs=1e-15)
    assert sp.effective_eigenvalue == pytest.approx((r @ Kmat @ r / r.pow(2).sum()).item(), rel=1e-10)
    assert lam[0] - 1e-12 <= sp.effective_eigenvalue <= lam[-1] + 1e-12
    # the P-L ratio is 2 effective_eigenvalue / n
    assert kd.row()["pl_ratio_probe"] == pytest.approx(2 * sp.effective_eigenvalue / x.shape[0], rel=1e-9)


def test_rank_deficient_network_gets_no_certificate():
    # P = L M (2d+1) = 1 * 1 * 9 < n d_out = 20: lambda_min(K) is 0 up to round-off
    net = make_net(L=1, M=1, d=4)
    x, y = data(N=10)
    kd = D.kernel_diagnostics(net, x, y)
    assert not kd.lambda_min.resolved and kd.row()["lambda_min_tangent"] is None and kd.pl_lower_bound is None
    cert = Certificate("full", 10, 10, kd.lambda_min.value, kd.lambda_min.resolution, kd.risk)
    assert cert.c0 is None and cert.radius is None
    s = cert.summary(5.0, 0.5)
    assert s["inside_certified_region"] is None and s["certified_radius"] is None and not s["resolved"]


def test_certificate_radius_rate_and_factor():
    c = Certificate("full", 4, 4, lambda0=2.0, resolution=1e-12, risk0=0.5)
    assert c.c0 == 0.5 and c.radius == pytest.approx(2.0)
    s = c.summary(flow_time=3.0, observed_factor=0.1)
    assert s["guaranteed_factor"] == pytest.approx(math.exp(-1.5)) and s["inside_certified_region"] is True


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
    p = init_particles(3, M, 2, seed=0, dtype=torch.float64)
    q = init_particles(3, M, 2, seed=1, dtype=torch.float64)
    exact = D.cot_distance(p, q)
    assert exact == pytest.approx(brute_force_cot(p, q), rel=1e-12, abs=1e-14)
    assert D.cot_distance_lower(p, q) - 1e-12 <= exact <= D.cot_distance_upper(p, q) + 1e-12
    # permuting particles within a layer does not move the measure
    perm = torch.randperm(M)
    assert D.cot_distance(p, {k: v[:, perm] for k, v in p.items()}) == pytest.approx(0.0, abs=1e-7)


def test_exact_cot_distance_is_at_most_the_path_length():
    p0 = init_particles(2, 5, 3, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    path, p = 0.0, p0
    for _ in range(20):
        nxt = {k: v + 0.1 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.items()}
        path += D.cot_distance_upper(nxt, p)
        p = nxt
    assert D.cot_distance(p, p0) <= D.cot_distance_upper(p, p0) <= path


@pytest.mark.parametrize("move", [0.02, 0.5, 3.0])
def test_distances_bracket_the_exact_value_and_tighten_with_budget(move):
    p = init_particles(3, 60, 2, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    q = {k: v + move * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in p.items()}
    exact = D.cot_distance(q, p)
    assert exact == pytest.approx(brute_force_cot_small(q, p), rel=1e-9)
    at_exact = D.distances(q, p, exact_max_m=60)
    assert at_exact == {"cot_dist_init": exact, "cot_dist_init_lower": exact, "cot_dist_init_upper": exact,
                        "cot_dist_init_rel_width": 0.0}
    rows = [D.distances(q, p, exact_max_m=0, budget=n, target=0.0, exact_fallback_m=0) for n in range(5)]
    for row in rows:
        lo, up = row["cot_dist_init_lower"], row["cot_dist_init_upper"]
        assert row["cot_dist_init"] is None and lo <= exact * (1 + 1e-12) and exact <= up * (1 + 1e-12)
        assert lo >= D.cot_distance_lower(q, p) * (1 - 1e-12) and up <= D.cot_distance_upper(q, p) * (1 + 1e-12)
        assert row["cot_dist_init_rel_width"] == pytest.approx((up - lo) / up)
    for small, large in zip(rows, rows[1:]):
        assert large["cot_dist_init_lower"] >= small["cot_dist_init_lower"]
        assert large["cot_dist_init_upper"] <= small["cot_dist_init_upper"]
    assert rows[-1]["cot_dist_init_rel_width"] <= 1e-3
    default = D.distances(q, p, exact_max_m=0, exact_fallback_m=0)  # the default target stops as soon as it is met
    assert default["cot_dist_init_rel_width"] <= D.DISTANCE_TARGET


def brute_force_cot_small(p, q):
    """W_COT with each layer's W_2^2 from an independent solver: the transport LP (HiGHS), since exhaustive
    search over permutations is out of reach at M = 60."""
    from scipy.optimize import linprog

    a, b = D.flatten_particles(p), D.flatten_particles(q)
    total = 0.0
    for l in range(a.shape[0]):
        C = torch.cdist(a[l], b[l]).pow(2).numpy()
        M = C.shape[0]
        A = [[1.0 if k // M == i else 0.0 for k in range(M * M)] for i in range(M)]
        A += [[1.0 if k % M == j else 0.0 for k in range(M * M)] for j in range(M)]
        res = linprog(C.reshape(-1), A_eq=A, b_eq=[1.0 / M] * (2 * M), bounds=(0, None), method="highs")
        total += res.fun
    return math.sqrt(total / a.shape[0])
