"""Certified W_2 / W_COT brackets against brute force: all permutations, scipy's assignment, explicit
permutation costs and dual feasibility on the full cost matrix."""
import itertools
import math

import pytest
import torch

from cotresnet.diagnostics import auction as A
from cotresnet.diagnostics import transport as T

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def cost_matrix(a, b):
    """|a_i - b_j|^2 from differences, float64: (M, M)."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def clouds(kind, M, k, seed):
    g = gen(seed)
    a = torch.randn(M, k, generator=g, dtype=torch.float64)
    noise = torch.randn(M, k, generator=g, dtype=torch.float64)
    if kind == "barely":  # the same particles, relabelled, moved by 1e-3
        return a, a[torch.randperm(M, generator=g)] + 1e-3 * noise
    if kind == "moved":
        return a, a + noise
    if kind == "far":
        return a, 3 * a + 2 * noise + 1
    if kind == "independent":
        return a, noise
    if kind == "duplicates":  # few distinct points, many copies of each
        pick = torch.randint(0, min(3, M), (2, M), generator=g)
        return a[pick[0]], noise[pick[1] % 2]
    if kind == "permuted":  # W_2 = 0 exactly
        return a, a[torch.randperm(M, generator=g)]
    raise ValueError(kind)


def assert_certified(br, a, b, exact):
    tol = 1e-9 * exact + 1e-13
    assert br.lower2 <= exact + tol and exact <= br.upper2 + tol
    assert br.lower2 <= br.upper2
    M = a.shape[0]
    assert torch.equal(br.perm.sort().values, torch.arange(M))  # a permutation
    assert br.upper2 == pytest.approx(T.perm_cost(a, b, br.perm), rel=1e-12, abs=0)
    # the dual pair is feasible against costs from differences, and certifies no more than lower2
    assert (br.f[:, None] + br.g[None, :] <= cost_matrix(a, b)).all()
    assert (br.f.mean() + br.g.mean()).item() <= br.lower2


def test_exact_path_equals_all_permutations():
    for M, k, seed in itertools.product(range(1, 7), (1, 2, 5), range(3)):
        a, b = clouds("independent", M, k, seed)
        C = cost_matrix(a, b)
        brute = min(C[range(M), list(s)].mean().item() for s in itertools.permutations(range(M)))
        ex = T.w2_bracket(a, b)
        assert ex.exact and ex.lower2 == ex.upper2 == pytest.approx(brute, rel=1e-12, abs=1e-15)
        if M >= 2:
            assert_certified(T.w2_bracket(a, b, exact_max_m=0, exact_fallback_m=0), a, b, brute)


@pytest.mark.parametrize("kind", ["barely", "moved", "far", "independent", "duplicates", "permuted"])
@pytest.mark.parametrize("M,k", [(2, 1), (9, 3), (60, 33), (150, 2), (400, 5), (400, 33)])
def test_bracket_contains_the_exact_value(kind, M, k):
    for seed in range(2):
        a, b = clouds(kind, M, k, 100 * seed + M + k)
        exact = T.exact_w2(a, b).upper2
        br = T.w2_bracket(a, b, exact_max_m=0, exact_fallback_m=0, seed=seed)
        assert not br.exact
        assert_certified(br, a, b, exact)
        assert br.upper2 <= T.perm_cost(a, b, torch.arange(M)) * (1 + 1e-12)  # never worse than labels
        assert br.lower2 >= (a.mean(0) - b.mean(0)).pow(2).sum().item() * (1 - 1e-12) - 1e-15


def test_default_budget_is_tight():
    for kind in ("barely", "moved", "independent"):
        a, b = clouds(kind, 400, 33, 7)
        br = T.w2_bracket(a, b, exact_max_m=0, exact_fallback_m=0)
        assert br.upper2 - br.lower2 <= 1e-3 * br.upper2, kind


def test_small_blocks_change_nothing_certified():
    a, b = clouds("moved", 300, 4, 3)
    exact = T.exact_w2(a, b).upper2
    for block in (1, 17, 1000, 10 ** 8):
        assert_certified(T.w2_bracket(a, b, block=block, exact_max_m=0, exact_fallback_m=0), a, b, exact)


def test_a_phase_that_gives_up_leaves_a_certified_bracket(monkeypatch):
    monkeypatch.setattr(A, "PHASE_BIDS", 1)
    for kind in ("duplicates", "far", "independent"):
        a, b = clouds(kind, 200, 3, 2)
        assert_certified(T.w2_bracket(a, b, exact_max_m=0, exact_fallback_m=0), a, b, T.exact_w2(a, b).upper2)


def test_one_dimensional_projection_is_exact():
    for M, seed in itertools.product((1, 5, 64, 333), range(3)):
        a, b = clouds("far", M, 1, seed)
        exact = T.exact_w2(a, b).upper2
        assert T.sliced_lower2(a, b) == pytest.approx(exact, rel=1e-9, abs=1e-15)
        assert T.sliced_lower2(a, b) <= exact * (1 + 1e-12)


def test_sliced_bound_is_a_lower_bound():
    for kind, k in itertools.product(("moved", "far", "independent", "duplicates"), (2, 3, 8)):
        a, b = clouds(kind, 120, k, k)
        assert T.sliced_lower2(a, b, n_random=4, seed=k) <= T.exact_w2(a, b).upper2 * (1 + 1e-12)


def test_bracket_tightens_with_budget():
    for kind, k in (("independent", 5), ("far", 33), ("moved", 2)):
        a, b = clouds(kind, 300, k, 11)
        exact = T.exact_w2(a, b).upper2
        brs = [T.w2_bracket(a, b, budget=n, exact_max_m=0, exact_fallback_m=0, seed=1) for n in range(9)]
        for br in brs:
            assert_certified(br, a, b, exact)
        for small, large in zip(brs, brs[1:]):
            assert large.lower2 >= small.lower2 and large.upper2 <= small.upper2
        assert brs[-1].upper2 - brs[-1].lower2 < 0.05 * (brs[0].upper2 - brs[0].lower2)


def test_below_threshold_the_bracket_is_exact():
    a, b = clouds("moved", 200, 3, 5)
    for budget in (0, 3):
        br = T.w2_bracket(a, b, budget=budget, exact_max_m=200)
        assert br.exact and br.lower2 == br.upper2 == T.exact_w2(a, b).upper2
    assert not T.w2_bracket(a, b, exact_max_m=199, exact_fallback_m=0).exact


def particles(L, M, d, seed, like=None, move=1.0):
    g = gen(seed)
    shape = {"u": (L, M, d), "w": (L, M, d), "b": (L, M)}
    p = {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in shape.items()}
    return p if like is None else {k: like[k] + move * p[k] for k in p}


def test_cot_bracket_matches_the_exact_distance():
    from cotresnet.diagnostics.measures import cot_distance
    p = particles(3, 40, 2, 0)
    for move in (1e-2, 1.0):
        q = particles(3, 40, 2, 1, like=p, move=move)
        exact = cot_distance(p, q)
        ex = T.cot_distance_bracket(p, q)
        assert ex.method == "exact" and ex.relative_width == 0.0
        assert ex.lower == ex.upper == ex.exact == pytest.approx(exact, rel=1e-12)
        br = T.cot_distance_bracket(p, q, exact_max_m=0, exact_fallback_m=0)
        assert br.method == "bracket" and br.exact is None and len(br.layers) == 3
        assert br.lower <= exact * (1 + 1e-9) and exact <= br.upper * (1 + 1e-9)
        assert br.relative_width == pytest.approx((br.upper - br.lower) / br.upper)
        assert br.upper ** 2 == pytest.approx(sum(x.upper2 for x in br.layers) / 3, rel=1e-12)
        assert br.relative_width < 1e-3


def test_cot_bracket_of_identical_networks_is_zero():
    p = particles(2, 30, 3, 4)
    br = T.cot_distance_bracket(p, p, exact_max_m=0, exact_fallback_m=0)
    assert br.lower == 0.0 and br.upper == 0.0 and br.relative_width == 0.0
    assert math.isclose(T.cot_distance_bracket(p, p).exact, 0.0)


@pytest.mark.parametrize("kind", ["barely", "moved", "independent", "duplicates", "permuted"])
def test_nearest_dual_is_feasible_and_worth_the_identity_when_twins_are_nearest(kind):
    a, b = clouds(kind, 300, 5, 21)
    f = T.nearest_dual(a, b)
    C = cost_matrix(a, b)
    assert (f[:, None] <= C).all() and (f >= 0).all()  # with g = 0: a feasible dual pair
    twins = C.argmin(1) == torch.arange(300)
    if twins.all():  # every particle's nearest neighbour is its own: the identity coupling is optimal
        identity = T.perm_cost(a, b, torch.arange(300))
        assert f.mean().item() == pytest.approx(identity, rel=1e-9)
        assert T.exact_w2(a, b).upper2 == pytest.approx(identity, rel=1e-12)
    else:  # exact where the search did not stop, zero after
        nearest = C.min(1).values
        assert ((f - nearest).abs() <= 1e-9 * nearest + 1e-12 * C.max() + (f == 0) * nearest).all()
    if kind == "independent":  # the search gave up after its first chunk: most rows keep f = 0
        assert (f == 0).sum() >= 300 * (1 - 1 / T.NEAREST_CHUNKS) - 1


def test_nearest_dual_of_particles_that_kept_their_labels_is_the_identity_cost():
    a = torch.randn(400, 33, generator=gen(3), dtype=torch.float64)
    b = a + 0.3 * torch.randn(400, 33, generator=gen(4), dtype=torch.float64)  # moved, labels kept
    identity = T.perm_cost(a, b, torch.arange(400))
    assert T.nearest_dual(a, b).mean().item() == pytest.approx(identity, rel=1e-10)  # less its rounding slack
    assert T.exact_w2(a, b).upper2 == pytest.approx(identity, rel=1e-12)


def test_cheap_steps_close_the_bracket_of_barely_moved_particles_without_the_auction(monkeypatch):
    def no_auction(*args):
        raise AssertionError("the auction ran")
        yield

    monkeypatch.setattr(T, "auction_phases", no_auction)
    p = particles(4, 500, 3, 0)
    q = {k: v + 0.02 * torch.randn(v.shape, generator=gen(1), dtype=v.dtype) for k, v in p.items()}
    br = T.cot_distance_bracket(q, p, exact_max_m=0, exact_fallback_m=0, target=1e-6)
    assert br.relative_width <= 1e-6 and br.method == "bracket"
    exact = T.cot_distance_bracket(q, p).exact
    assert br.lower <= exact * (1 + 1e-12) and exact <= br.upper * (1 + 1e-12)


def test_the_target_stops_refinement_and_the_widest_layers_go_first():
    p = particles(3, 200, 2, 5)
    q = particles(3, 200, 2, 6, like=p, move=1.0)
    q = {k: torch.cat([v[:1] * 0 + p[k][:1], v[1:]]) for k, v in q.items()}  # layer 0 does not move
    exact = T.cot_distance_bracket(p, q, exact_max_m=200).exact
    loose, tight = (T.cot_distance_bracket(p, q, exact_max_m=0, exact_fallback_m=0, target=t) for t in (0.3, 0.0))
    for br in (loose, tight):
        assert br.lower <= exact * (1 + 1e-12) and exact <= br.upper * (1 + 1e-12)
    assert tight.relative_width < loose.relative_width <= 0.3
    assert loose.layers[0].upper2 == 0.0  # a layer that did not move is closed at once


def test_cot_bracket_contains_the_exact_distance_and_tightens_with_budget():
    from cotresnet.diagnostics.measures import cot_distance_lower, cot_distance_upper
    p = particles(3, 120, 2, 7)
    for move in (0.05, 1.0, 3.0):
        q = particles(3, 120, 2, 8, like=p, move=move)
        exact = T.cot_distance_bracket(p, q, exact_max_m=120).exact
        brs = [T.cot_distance_bracket(p, q, exact_max_m=0, exact_fallback_m=0, budget=n, seed=1) for n in range(7)]
        for br in brs:
            assert br.lower <= exact * (1 + 1e-12) and exact <= br.upper * (1 + 1e-12)
            assert br.lower >= cot_distance_lower(p, q) * (1 - 1e-12)
            assert br.upper <= cot_distance_upper(p, q) * (1 + 1e-12)
        for small, large in zip(brs, brs[1:]):
            assert large.lower >= small.lower and large.upper <= small.upper
        assert brs[-1].relative_width <= 1e-2 * max(brs[0].relative_width, 1e-10) or brs[-1].relative_width < 1e-9


@pytest.mark.parametrize("kind", ["far", "independent"])
def test_layers_far_from_the_identity_are_solved_exactly_above_exact_max_m(kind):
    """Clouds far apart leave the cheap steps' bracket wide, where the auction costs many phases (15-27 s a
    layer at M = 2048 against 1.6 s for the assignment): up to EXACT_FALLBACK_M the layer is solved exactly."""
    p, q = ({k: torch.stack([x[:, :3], x[:, 3:6]]) if k != "b" else torch.stack([x[:, 6], x[:, 7]])
             for k in "uwb"} for x in clouds(kind, 40, 8, 3))
    br = T.cot_distance_bracket(p, q, exact_max_m=10)
    assert br.method == "exact" and br.exact == pytest.approx(T.cot_distance_bracket(p, q).exact, rel=1e-12)
    moved = T.cot_distance_bracket(p, {k: v + 1e-4 for k, v in p.items()}, exact_max_m=10)
    assert moved.method == "bracket"  # barely moved particles: the cheap steps' certificate is kept
