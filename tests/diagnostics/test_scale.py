"""Kernels at scale against brute force, float64: blocked builds against jacrev and unblocked sweeps,
TSQR against SVD, shift-invert and Lanczos quadrature against eigh / eigvalsh."""
import pytest
import torch
from torch.func import functional_call, jacrev

from cotresnet import diagnostics as D
from cotresnet.diagnostics import kernels as K
from cotresnet.diagnostics import spectra as S
from cotresnet.diagnostics.lanczos import gauss_rule
from helpers import data, make_net


def jacrev_kernel(net, x):
    params = {k: v.detach() for k, v in net.named_parameters()}
    J = jacrev(lambda p: functional_call(net, p, (x,)).reshape(-1))(params)
    J = torch.cat([J[k].reshape(J[k].shape[0], -1) for k in ("u", "w", "b")], 1)
    return net.L * net.M * J @ J.T


def psd(N, spectrum, seed=0):
    """V diag(spectrum) V^T with a random orthogonal V: (N, N)."""
    g = torch.Generator().manual_seed(seed)
    V, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    return (V * spectrum) @ V.T, V


def smallest_budget(n, d_out):
    """A budget just above K itself: many row blocks, particle chunks of one or two."""
    N = n * d_out
    return 8 * (N * N + 2 * n * n) + 8 * 4 * N * d_out + 8 * (N + 3 * n) * 2 * 2


@pytest.mark.parametrize("act,d_out", [("tanh", 2), ("softplus", 3), ("gelu", 1)])
def test_blocked_tangent_kernel_equals_jacrev(act, d_out):
    net = make_net(L=3, M=7, d=5, d_in=3, d_out=d_out, act=act)
    x, _ = data(N=9, d_out=d_out)
    exact = jacrev_kernel(net, x)
    for budget in (smallest_budget(9, d_out), 2 * smallest_budget(9, d_out), K.MEMORY_BUDGET):
        rows, cols = K._kernel_blocks(9, d_out, net.M, budget)
        assert 8 * (rows * 9 * d_out + len(range(*cols[0].indices(net.M))) * (9 * d_out + 27)) <= budget
        torch.testing.assert_close(K.tangent_kernel(net, x, memory_budget=budget), exact, rtol=1e-11, atol=1e-13)
    assert len(K._kernel_blocks(9, d_out, net.M, smallest_budget(9, d_out))[1]) > 1  # several chunks


def test_a_kernel_larger_than_the_budget_is_refused():
    net = make_net(L=2, M=4)
    x, _ = data(N=8)
    with pytest.raises(ValueError, match="memory_budget"):
        K.tangent_kernel(net, x, memory_budget=8 * 16 * 16)


def test_chunked_euler_quantities_equal_the_unchunked_sweep_and_autograd():
    net = make_net(L=4, M=9, d=4)
    x, y = data(N=6)
    whole, chunked = K.euler_quantities(net, x, y), K.euler_quantities(net, x, y, memory_budget=1)
    for a, b in ((whole.X, chunked.X), (whole.A, chunked.A), (whole.r, chunked.r)):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)
    for l in range(net.L):
        torch.testing.assert_close(chunked.Z[l], net.b[l].detach() + whole.X[l] @ net.w[l].detach().T)
    torch.testing.assert_close(whole.r, (net(x) - y).detach(), rtol=1e-12, atol=1e-14)
    with pytest.raises(IndexError):
        chunked.Z[net.L]


def test_tsqr_r_factor_has_the_singular_values_of_F():
    net = make_net(L=2, M=50, d=4, act="softplus")
    x, y = data(N=7)
    q = K.euler_quantities(net, x, y)
    for l in range(net.L):
        F = net.sigma(q.Z[l]).detach()
        for budget in (1, 8 * 2 * 49 + 8 * 3 * 7 * 5, K.MEMORY_BUDGET):  # one particle a chunk, 5, all
            R = K._r_factor(net, q.X, l, budget)
            torch.testing.assert_close(torch.linalg.svdvals(R), torch.linalg.svdvals(F), rtol=1e-10, atol=0)


def test_feature_eigenvalue_takes_the_gram_only_when_it_knows_enough_digits():
    net = make_net(L=2, M=6, d=4, act="softplus")
    x, y = data(N=6)
    with torch.no_grad():
        net.w[:, 1] = net.w[:, 0] + 1e-7  # layer features nearly collinear: lambda_min far below eigvalsh's floor
        net.b[:, 1] = net.b[:, 0]
    q = K.euler_quantities(net, x, y)
    for l in range(net.L):
        F = net.sigma(q.Z[l]).detach()
        e = K.feature_eigenvalue(net, q.X, l, F @ F.T)
        svd = torch.linalg.svdvals(F)[-1].item() ** 2 / net.M
        assert e.resolved and e.value == pytest.approx(svd, rel=1e-6)
        assert e.resolution < 1e-6 * e.value  # the SVD's floor, not the Gram's
    wide = make_net(L=2, M=40, d=4)
    qw = K.euler_quantities(wide, x, y)
    for l, e in enumerate(K.feature_spectra(wide, qw.X, memory_budget=1)):
        F = wide.sigma(qw.Z[l]).detach()
        exact = torch.linalg.eigvalsh(F @ F.T / wide.M)
        assert e.value == pytest.approx(exact[0].item(), rel=1e-9)
        assert e.resolution == pytest.approx(6 * torch.finfo(torch.float64).eps * exact[-1].item())  # Gram form


def test_u_gradient_sums_from_grams_equal_the_chunked_ones_and_autograd():
    net = make_net(L=3, M=8, d=4)
    x, y = data(N=6)
    net.zero_grad(set_to_none=True)
    net.risk(x, y).backward()
    G_u = net.L * net.M * net.u.grad.pow(2).sum().item()
    q = K.euler_quantities(net, x, y)
    spectra = K.feature_spectra(net, q.X)
    sums = [K.u_layer_sum(q, l, K.feature_gram(net, q.X, l)) for l in range(net.L)]
    from_grams = K.u_gradient_bound(net, q, spectra, layer_sums=sums)
    chunked = K.u_gradient_bound(net, q, spectra, memory_budget=1)
    assert from_grams["grad_norm2_u"] == pytest.approx(G_u, rel=1e-11)
    assert chunked["grad_norm2_u"] == pytest.approx(G_u, rel=1e-11)
    assert from_grams["grad_norm2_u_lower"] == chunked["grad_norm2_u_lower"]


@pytest.mark.parametrize("spectrum", [
    torch.logspace(-3, 2, 300, dtype=torch.float64),                       # well conditioned
    torch.cat([torch.tensor([1e-9, 1.01e-9]), torch.logspace(-4, 1, 298)]).double(),  # tiny, clustered bottom
    torch.cat([torch.zeros(20), torch.logspace(-2, 0, 280)]).double(),     # rank deficient: unresolved
])
def test_shift_invert_lambda_min_is_within_its_resolution_of_eigvalsh(spectrum):
    Kmat, _ = psd(300, spectrum.double())
    before = Kmat.clone()
    exact = torch.linalg.eigvalsh(Kmat)
    lam_max = S.largest_eigenvalue(Kmat)
    assert lam_max == pytest.approx(exact[-1].item(), rel=1e-12)
    e = S.smallest_eigenvalue(Kmat, lam_max)
    assert abs(e.value - exact[0].item()) <= e.resolution
    assert e.resolution <= 3 * 300 * torch.finfo(torch.float64).eps * lam_max  # no worse than ~3x eigvalsh's
    assert e.resolved == (spectrum[0].item() > 10 * e.resolution)  # the zeros are not resolved, 1e-9 is
    assert torch.equal(Kmat, before)  # the diagonal shifts were undone bit for bit


def test_a_wrong_ritz_pair_fails_the_inertia_certificate_and_eigvalsh_decides(monkeypatch):
    spectrum = torch.logspace(-3, 1, 200, dtype=torch.float64)
    Kmat, V = psd(200, spectrum, seed=1)

    def second_pair(op, k, which, v0, **limits):  # what a Lanczos that missed the bottom eigenvector returns
        return None, V[:, 1:2].numpy()

    monkeypatch.setattr("scipy.sparse.linalg.eigsh", second_pair)  # spectra imports it when it runs
    e = S.smallest_eigenvalue(Kmat, 10.0)
    assert e.value == pytest.approx(1e-3, rel=1e-9)
    assert e.resolution == pytest.approx(200 * torch.finfo(torch.float64).eps * 10.0, rel=1e-6)  # eigvalsh's


def test_a_numerically_singular_kernel_costs_bounded_work_and_reports_unresolved(monkeypatch):
    g = torch.Generator().manual_seed(6)
    F = torch.randn(400, 100, generator=g, dtype=torch.float64)
    Kmat = F @ F.T  # rank 100: 300 eigenvalues at rounding level, a cluster at the top of the inverse
    solves = []
    real = S._solver
    monkeypatch.setattr(S, "_solver", lambda C: (lambda b: solves.append(1) or real(C)(b)))
    e = S.smallest_eigenvalue(Kmat, S.largest_eigenvalue(Kmat))
    assert not e.resolved and e.lower == 0.0 and torch.linalg.eigvalsh(Kmat)[0].item() <= e.value + 1e-12
    assert len(solves) <= (S.ARPACK_RESTARTS + 1) * S.ARPACK_NCV


@pytest.mark.parametrize("low", [-6, -2])
def test_quadrature_shares_are_within_their_resolution_of_eigh(low):
    spectrum = torch.logspace(low, 2, 400, dtype=torch.float64)
    Kmat, V = psd(400, spectrum, seed=2)
    r = torch.randn(400, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lam_min, lam_max, exact = S.kernel_spectrum(Kmat, r)
    widths = []
    for steps in (8, 64, 128):
        qmin, qmax, quad = S.kernel_spectrum(Kmat, r, eigh_max_dim=0, steps=steps)
        assert abs(qmin.value - lam_min.value) <= qmin.resolution and qmax == pytest.approx(lam_max, rel=1e-12)
        assert 0 < quad.share_resolution <= 1
        shares = {k: s for k, _, s in exact.decades}
        for k, count, s in quad.decades:
            assert count is None and abs(s - shares.pop(k, 0.0)) <= quad.share_resolution + 1e-12
        assert sum(shares.values()) <= quad.share_resolution + 1e-12  # decades the rules saw no node in
        assert abs(quad.unresolved[1] - exact.unresolved[1]) <= quad.share_resolution + 1e-12
        assert abs(quad.top_share - exact.top_share) <= quad.share_resolution + 1e-12
        assert quad.effective_eigenvalue == pytest.approx(exact.effective_eigenvalue, rel=1e-12)
        widths.append(quad.share_resolution)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.1  # every decade resolved at 128 nodes


def test_a_gauss_rule_is_exact_when_the_krylov_space_closes():
    spectrum = torch.logspace(-4, 1, 120, dtype=torch.float64)
    Kmat = torch.diag(spectrum)
    r = torch.zeros(120, dtype=torch.float64)
    r[[3, 50, 100]] = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)  # three eigenvectors
    rule = gauss_rule(lambda v: Kmat @ v, r, 64, 10.0)
    assert rule.exact and len(rule.nodes) == 3
    torch.testing.assert_close(rule.nodes, spectrum[[3, 50, 100]], rtol=1e-12, atol=0)
    torch.testing.assert_close(rule.weights, torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64) / 5.25)
    assert rule.cdf(1e-3) == (pytest.approx(1 / 5.25), 0.0)
    partial = gauss_rule(lambda v: Kmat @ v, torch.ones(120, dtype=torch.float64), 10, 10.0)
    assert not partial.exact and partial.cdf(1e-3)[1] > 0


def test_kernel_diagnostics_large_path_agrees_with_eigh_and_a_tiny_budget_changes_nothing():
    net = make_net(L=3, M=12, d=4)
    x, y = data(N=40)
    small = D.kernel_diagnostics(net, x, y)
    large = D.kernel_diagnostics(net, x, y, memory_budget=smallest_budget(40, 2), eigh_max_dim=0)
    assert abs(large.lambda_min.value - small.lambda_min.value) <= large.lambda_min.resolution
    assert large.lambda_max == pytest.approx(small.lambda_max, rel=1e-12)
    assert large.grad_norm2 == pytest.approx(small.grad_norm2, rel=1e-11)
    assert abs(large.spectrum.top_share - small.spectrum.top_share) <= large.spectrum.share_resolution + 1e-12
    assert large.spectrum.effective_eigenvalue == pytest.approx(small.spectrum.effective_eigenvalue, rel=1e-11)
    assert [e.value for e in large.feature] == pytest.approx([e.value for e in small.feature], rel=1e-9)
    assert large.u_bound == pytest.approx(small.u_bound, rel=1e-11)
    row = large.row()
    assert row["lambda_min_tangent_resolution"] == large.lambda_min.resolution


def test_callbacks_kernel_memory_reaches_the_kernels_and_a_budget_too_small_for_K_is_refused(tmp_path, monkeypatch):
    from cotresnet.errors import ConfigError
    from helpers import train_small

    budgets, real = [], D.kernel_diagnostics
    monkeypatch.setattr(D, "kernel_diagnostics", lambda *a, **kw: budgets.append(kw["memory_budget"]) or real(*a, **kw))
    train_small(tmp_path / "run", "callbacks.kernel_memory_mb=16", "trainer.max_steps=2")
    assert budgets and set(budgets) == {16 * 2**20}
    # 1400 samples x d_out 2: K (2800^2) and two 1400^2 Grams in float64 are 89.7 MiB, twice that is needed
    with pytest.raises(ConfigError, match=r"callbacks.kernel_memory_mb=64 .* must be >= 180"):
        train_small(tmp_path / "big", "data.n_train=1400", "callbacks.kernel_max_dim=4096", "callbacks.kernel_memory_mb=64")
    assert not (tmp_path / "big").exists()
