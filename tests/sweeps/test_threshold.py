"""The threshold search (cotresnet.threshold) driven by synthetic success criteria with known
thresholds, and its statistics (cotresnet.threshold_stats) on synthetic data."""
import math

import numpy as np
import pandas as pd
import pytest

from cotresnet.sweeps.threshold import SearchConfig, ThresholdSearch
from cotresnet.sweeps.threshold_stats import logistic_threshold, power_law_fit


def drive(search, criterion, max_rounds=60, rounds=None):
    """Run rounds until done (or `rounds` rounds); criterion(combination, value, seed) -> bool.
    Checks on the way that no (combination, value, seed) is ever asked for twice and that a
    round's requests all belong to that round. Returns the rounds' requests."""
    history = []
    while not search.done and len(history) != rounds:
        requests = search.next_points()
        assert requests and len(history) < max_rounds
        seen = set(search.outcomes()[["combination", "value", "seed"]].itertuples(index=False, name=None))
        asked = [(r.combination, r.value, s) for r in requests for s in r.seeds]
        assert not seen & set(asked) and len(set(asked)) == len(asked)
        search.record([dict(combination=c, value=v, seed=s, success=criterion(c, v, s)) for c, v, s in asked])
        history.append(requests)
    return history


def expected_rounds(lo, hi, ratio):
    """1 round for the ends, then bisections until log(hi/lo) halves below log(ratio)."""
    return 1 + math.ceil(math.log2(math.log2(hi / lo) / math.log2(ratio)))


def only(search):
    (row,) = search.brackets().itertuples(index=False)
    return row


def test_integer_threshold_37():
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, seeds=(0, 1, 2)))
    drive(search, lambda c, m, s: m >= 37)
    b = only(search)
    assert b.status == "converged" and b.lo < 37 <= b.hi and b.hi / b.lo <= 1.1
    assert b.rounds == expected_rounds(4, 512, 1.1) == 7
    pts = search.points()
    assert pts.value.is_unique and all(isinstance(v, int) for v in pts.value)
    assert (b.points, b.jobs) == (8, 8)  # seeds run as replicas: one job per point
    assert list(pts[pts["round"] == 1].value) == [4, 512]


def test_float_threshold_below():
    cfg = SearchConfig("init.scale_u", 0.01, 10.0, direction="below", ratio=1.05, seeds=(0, 1))
    search = ThresholdSearch(cfg)
    drive(search, lambda c, x, s: x <= 0.73)
    b = only(search)
    assert b.status == "converged" and b.lo <= 0.73 < b.hi and b.hi / b.lo <= 1.05
    assert b.rounds == expected_rounds(0.01, 10, 1.05) == 9 and b.points == 10


def test_linear_space_key_through_zero():
    cfg = SearchConfig("init.bias", -2.0, 2.0, log=False, width=0.01)
    search = ThresholdSearch(cfg)
    drive(search, lambda c, x, s: x >= -0.3)
    b = only(search)
    assert b.status == "converged" and b.lo < -0.3 <= b.hi and b.width <= 0.01
    assert b.rounds == 1 + math.ceil(math.log2(4 / 0.01)) == 10 and math.isnan(b.ratio)


@pytest.mark.parametrize("threshold, lo, hi, expansions", [(37, 128, 512, 1), (3000, 4, 512, 2)])
def test_bracket_expands(threshold, lo, hi, expansions):
    search = ThresholdSearch(SearchConfig("model.M", lo, hi, integer=True, factor=4))
    history = drive(search, lambda c, m, s: m >= threshold)
    b = only(search)
    assert b.status == "converged" and b.expansions == expansions and b.lo < threshold <= b.hi
    # the ends, one new end per expansion, then bisection of a bracket of ratio 4 (the factor)
    assert [len(r) for r in history[:1 + expansions]] == [2] + [1] * expansions
    assert b.rounds == expansions + expected_rounds(1, 4, 1.1)


def test_unbracketed_at_limits_and_after_max_expansions():
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, limits=(1, 5000)))
    drive(search, lambda c, m, s: m >= 10**6)
    b = only(search)  # 512 -> 2048 -> 5000 (clipped): then it cannot move
    assert (b.status, b.lo, b.hi, b.expansions, b.rounds) == ("unbracketed", 2048, 5000, 2, 3)
    search = ThresholdSearch(SearchConfig("init.scale_u", 0.01, 10.0, direction="below", factor=10, max_expansions=3))
    drive(search, lambda c, x, s: x <= 1e-12)
    b = only(search)  # no limit below 0.01 but only three expansions: 1e-3, 1e-4, 1e-5
    assert (b.status, b.lo, b.hi, b.expansions, b.rounds) == ("unbracketed", 1e-5, 1e-4, 3, 4)
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True))
    drive(search, lambda c, m, s: True)  # below 4: 1 is the lowest integer in log space
    assert (only(search).status, only(search).lo, only(search).rounds) == ("unbracketed", 1, 2)


def test_inverted_ends_stop():
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True))
    drive(search, lambda c, m, s: m <= 37)  # succeeds below: direction is wrong
    assert (only(search).status, only(search).rounds, only(search).points) == ("inverted", 1, 2)


def test_non_monotone_outcome_moves_bracket_but_terminates():
    # a spurious success island at M = 13 (visited by bisection): the bracket follows it
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True))
    drive(search, lambda c, m, s: m >= 37 or m == 13)
    b = only(search)
    assert (b.status, b.lo, b.hi) == ("converged", 12, 13)


@pytest.mark.parametrize("rng_seed", range(5))
def test_random_noise_keeps_bracket_invariant(rng_seed):
    rng = np.random.default_rng(rng_seed)
    draw = {}

    def noisy(c, m, s):  # P(success) = sigmoid(3 log(M / 37)), each (M, seed) drawn once
        return draw.setdefault((m, s), rng.random() < 1 / (1 + (37 / m) ** 3))
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, seeds=(0, 1, 2)))
    drive(search, noisy)
    b, pts = only(search), search.points().set_index("value")
    assert b.status in ("converged", "inverted", "unbracketed")
    if b.status == "converged":
        assert not pts.success[b.lo] and pts.success[b.hi]
        assert not ((pts.index > b.lo) & (pts.index < b.hi)).any()


def test_seed_dependent_boundary_recovers_median():
    t = 40 * np.exp([-0.4, -0.2, 0.0, 0.2, 0.4])  # seed k succeeds iff M >= t[k]; median 40
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, seeds=tuple(range(5))))
    drive(search, lambda c, m, s: m >= t[s])
    b = only(search)
    assert b.lo < 40 <= b.hi  # 3 of 5 seeds (>= 0.5) succeed iff M >= 40
    (fit,) = search.estimates().itertuples(index=False)
    assert not fit.separable and fit.lo < 40 < fit.hi and abs(math.log(fit.threshold / 40)) < 0.1


def test_logistic_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    m = np.repeat(np.geomspace(10, 160, 9), 20)
    y = rng.random(m.size) < 1 / (1 + np.exp(-4 * np.log(m / 40)))
    fit = logistic_threshold(m, y)
    assert not fit.separable and fit.lo < 40 < fit.hi and fit.lo < fit.threshold < fit.hi
    assert 2 < fit.slope < 8
    below = logistic_threshold(m, ~y, direction="below")  # the mirrored curve: same threshold
    assert below.threshold == pytest.approx(fit.threshold, rel=1e-6) and below.slope < 0


def test_logistic_at_another_level_recovers_where_the_curve_crosses_it():
    rng = np.random.default_rng(1)
    m = np.repeat(np.geomspace(10, 160, 9), 30)
    y = rng.random(m.size) < 1 / (1 + np.exp(-4 * np.log(m / 40)))
    crossing = 40 * math.exp(math.log(3) / 4)  # where the planted curve reaches 3/4
    fit = logistic_threshold(m, y, at=0.75)
    assert fit.lo < crossing < fit.hi and abs(math.log(fit.threshold / crossing)) < 0.1


@pytest.mark.parametrize("direction", ["above", "below"])
def test_a_seed_that_never_succeeds_is_named_and_the_estimate_stays_in_its_bracket(direction):
    """The audit's plateau: one seed of three fails everywhere, the fraction plateaus at 2/3, and a logistic
    that must reach 1 put the estimate outside the final bracket (1.33 for [5.33, 5.73])."""
    from cotresnet.sweeps.threshold_tables import bracket_table

    rng = np.random.default_rng(2)
    t = {0: 5.5, 1: 5.6}  # seeds 0 and 1 switch near 5.5 (with noise), seed 2 never succeeds

    def succeeds(c, v, s):
        if s == 2:
            return False
        p = 1 / (1 + math.exp(-12 * math.log(v / t[s])))
        return bool(rng.random() < (p if direction == "above" else 1 - p))

    lo, hi = (0.3, 30.0)
    search = ThresholdSearch(SearchConfig("init.scale_u", lo, hi, direction=direction, seeds=(0, 1, 2)))
    drive(search, succeeds)
    (row,) = bracket_table(search, 0.95).itertuples(index=False)
    assert row.status == "converged" and row.never == "2" and row.plateau_high == pytest.approx(2 / 3)
    assert row.lo <= row.estimate <= row.hi and row.resolved and "never succeed" in row.note


def test_no_scaling_law_is_fitted_through_an_unresolved_combination(tmp_path):
    from cotresnet.report.threshold import scaling_fit

    boundary = pd.DataFrame({"x": [16, 32, 64, 128], "status": ["converged"] * 4, "estimate": [2.0, 4.1, 8.3, 1.0],
                             "estimate_lo": [1.9, 3.9, 8.0, 0.1], "estimate_hi": [2.1, 4.3, 8.6, 9.0],
                             "resolved": [True, True, True, False]})
    fit = scaling_fit(boundary, 0.95)
    assert fit["combinations"] == 3 and fit["alpha"] == pytest.approx(1.0, abs=0.05)
    assert scaling_fit(boundary.assign(resolved=[True, False, True, False]), 0.95) is None


def test_separable_data_gives_flagged_bracket():
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, seeds=(0, 1, 2)))
    drive(search, lambda c, m, s: m >= 37)
    (fit,) = search.estimates().itertuples(index=False)
    b = only(search)
    assert fit.separable and math.isnan(fit.threshold) and (fit.lo, fit.hi) == (b.lo, b.hi)
    fit = logistic_threshold([0.5, 0.7, 0.8, 1.2], [True, True, False, False], direction="below")
    assert fit.separable and (fit.lo, fit.hi) == pytest.approx((0.7, 0.8))
    fit = logistic_threshold([8, 16], [True, True])  # one class only: below the smallest value
    assert fit.separable and (fit.lo, fit.hi) == (0.0, 8.0)
    fit = logistic_threshold([8, 16, 16, 32], [False, False, True, True])  # quasi-separation at 16
    assert fit.separable and (fit.lo, fit.hi) == pytest.approx((8.0, 32.0))


def test_power_law_fit_exact_and_noisy():
    n = 2.0 ** np.arange(4, 13)
    fit = power_law_fit(n, 3 * n**0.5)
    assert fit.alpha == pytest.approx(0.5, abs=1e-9) and fit.c == pytest.approx(math.log(3))
    assert fit.alpha_lo <= 0.5 + 1e-9 and fit.alpha_hi >= 0.5 - 1e-9 and np.abs(fit.residuals).max() < 1e-9
    noisy = 3 * n**0.5 * np.exp(0.05 * np.random.default_rng(1).standard_normal(n.size))
    fit = power_law_fit(n, noisy)
    assert fit.alpha_lo < 0.5 < fit.alpha_hi and fit.alpha_hi - fit.alpha_lo < 0.1


def test_power_law_fit_weights_follow_the_intervals():
    n = 2.0 ** np.arange(4, 10)
    thresholds = 3 * n**0.5 * np.exp([0.02, -0.02, 0.01, -0.01, 0.0, 0.8])  # last one far off...
    widths = np.array([1.1, 1.1, 1.1, 1.1, 1.1, 100.0])  # ...and known only within a factor 100
    intervals = np.column_stack([thresholds / widths**0.5, thresholds * widths**0.5])
    plain, weighted = power_law_fit(n, thresholds), power_law_fit(n, thresholds, intervals=intervals)
    assert abs(plain.alpha - 0.5) > 0.1 and abs(weighted.alpha - 0.5) < 0.02
    assert weighted.weighted and weighted.alpha_lo < 0.5 < weighted.alpha_hi
    assert weighted.alpha_hi - weighted.alpha_lo < (plain.alpha_hi - plain.alpha_lo) / 4


def test_combinations_run_concurrently_and_scale_as_sqrt_n():
    ns = [64, 128, 256, 512, 1024, 2048]
    cfg = SearchConfig("model.M", 4, 512, combinations=tuple(f"data.n_train={n}" for n in ns), integer=True)
    threshold = {f"data.n_train={n}": math.ceil(3 * n**0.5) for n in ns}
    search = ThresholdSearch(cfg)
    running = set(cfg.combinations)
    for requests in iter(search.next_points, []):
        assert {r.combination for r in requests} == running  # one round: every unfinished one
        assert len({r.round for r in requests}) == 1
        drive(search, lambda c, m, s: m >= threshold[c], rounds=1)
        running = {st.combination for st in search.states() if st.status == "running"}
    b = search.brackets()
    assert (b.status == "converged").all()
    assert all(r.lo < threshold[r.combination] <= r.hi for r in b.itertuples())
    fit = power_law_fit(ns, np.sqrt(b.lo * b.hi), intervals=b[["lo", "hi"]])
    assert fit.alpha_lo < 0.5 < fit.alpha_hi


@pytest.mark.parametrize("cfg, criterion", [
    (SearchConfig("model.M", 4, 512, combinations=("n=64", "n=256"), integer=True, seeds=(0, 1, 2)),
     lambda c, m, s: m >= {"n=64": 37, "n=256": 80}[c]),
    (SearchConfig("init.scale_u", 0.01, 10.0, combinations=("a", "b"), direction="below", seeds=(0, 1)),
     lambda c, x, s: x <= {"a": 0.73, "b": 0.0123}[c]),
])
def test_resume_from_saved_outcomes(tmp_path, cfg, criterion):
    full = ThresholdSearch(cfg)
    drive(full, criterion)
    half = ThresholdSearch(cfg)
    drive(half, criterion, rounds=3)
    first = half.next_points()[0]  # interrupted mid-round: one point has only some seeds
    half.record([dict(combination=first.combination, value=first.value, seed=s,
                      success=criterion(first.combination, first.value, s)) for s in first.seeds[:1]])
    half.outcomes().to_csv(tmp_path / "outcomes.csv", index=False)
    saved = pd.read_csv(tmp_path / "outcomes.csv")

    resumed = ThresholdSearch(cfg)
    resumed.load(saved)
    assert resumed.next_points() == half.next_points()
    assert resumed.next_points()[0].seeds == first.seeds[1:]
    drive(resumed, criterion)  # drive checks no stored (combination, value, seed) is asked again
    pd.testing.assert_frame_equal(resumed.brackets(), full.brackets())
    pd.testing.assert_frame_equal(resumed.points(), full.points())


def test_jobs_versus_grid():
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, ratio=1.1, seeds=(0, 1, 2)))
    drive(search, lambda c, m, s: m >= 37)
    (row,) = search.versus_grid().itertuples(index=False)
    # grid: 4 * 1.1^k up to 512 takes ceil(log(128) / log(1.1)) + 1 = 52 points
    assert (row.jobs, row.grid_jobs) == (8, 52) and row.fraction <= 0.25
    seeded = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, seeds=(0, 1, 2), replicas=False))
    seeded.load(search.outcomes())
    (row,) = seeded.versus_grid().itertuples(index=False)
    assert (row.jobs, row.grid_jobs) == (24, 156)
    fine = ThresholdSearch(SearchConfig("model.M", 4, 20, integer=True, ratio=1.01))
    assert fine.versus_grid().grid_jobs.item() == 17  # a grid of integers has at most 20 - 4 + 1


def test_record_and_load_reject_what_does_not_belong():
    search = ThresholdSearch(SearchConfig("model.M", 4, 512, integer=True, combinations=("a",)))
    with pytest.raises(ValueError, match="not asked"):
        search.record([dict(combination="a", value=45, seed=0, success=True)])
    with pytest.raises(ValueError, match="unknown"):
        search.load([dict(combination="b", value=4, seed=0, success=True)])
    with pytest.raises(ValueError, match="columns"):
        search.load([dict(combination="a", value=4, seed=0)])
    with pytest.raises(ValueError, match="bool"):
        search.record([dict(combination="a", value=4, seed=0, success="False")])
    assert search.points().empty and search.brackets().status.item() == "running"
    with pytest.raises(ValueError):
        SearchConfig("model.M", 4, 512, direction="up")


@pytest.mark.parametrize("cfg, threshold", [
    (SearchConfig("model.M", 4, 512, integer=True, seeds=(0, 1, 2)), 37),
    (SearchConfig("model.M", 4, 512, integer=True, seeds=(0,)), 5),
    (SearchConfig("init.scale_u", 0.01, 10.0, direction="below", ratio=1.05, seeds=(0, 1)), 0.73),
    (SearchConfig("init.scale_u", -3.0, 5.0, log=False, width=0.1, seeds=(0,)), 1.234)])
def test_the_planned_points_bound_the_search_where_the_bracket_holds(cfg, threshold):
    """The sweep monitor's planned total: never below what the search then evaluates (integer midpoints can
    make the kept half the smaller one), falling round by round to the count at the end."""
    search = ThresholdSearch(cfg)
    above = (lambda x: x >= threshold) if cfg.direction == "above" else (lambda x: x <= threshold)
    plans = [search.planned_points()]
    while not search.done:
        drive(search, lambda c, x, s: above(x), rounds=1)
        plans.append(search.planned_points())
    final = len(search.points())
    assert plans[-1] == final and all(p >= final for p in plans) and plans == sorted(plans, reverse=True)
    assert plans[0] - final <= 2


def test_an_expansion_raises_the_plan():
    search = ThresholdSearch(SearchConfig("model.M", 4, 64, integer=True, seeds=(0,)))
    first = search.planned_points()
    drive(search, lambda c, m, s: m >= 200)
    assert len(search.points()) > first and search.planned_points() == len(search.points())
