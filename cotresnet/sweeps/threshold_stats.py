"""Statistics for threshold searches (cotresnet.threshold): where P(success) crosses 1/2, and how
that threshold scales with the sample count N. numpy/scipy only.

logistic_threshold: P(success | u) = sigmoid(b (u - t)), u = log(value) (or value in linear space),
fitted by maximum likelihood over every seed's outcome; the threshold is exp(t), with a profile
likelihood interval {t : 2 (l_max - max_b l(b, t)) <= chi2_1(level)} (Wilks). The profile
interval follows the likelihood's skew near the boundary, where the delta method is symmetric
and poor with a few seeds per point.

power_law_fit: log T = alpha log N + c by (weighted) least squares, t-interval for alpha.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

# Profile slope bound, in units of the standardized u: far steeper than any curve the data can
# tell apart from a step, and finite so the bounded 1-D minimizer always has a bracket.
_MAX_SLOPE = 1e3


@dataclass(frozen=True)
class LogisticFit:
    """threshold: value at P(success) = 1/2 (NaN when separable); [lo, hi]: its interval at
    `level` (profile likelihood), or, when separable, the data's own bracket; slope: d logit /
    du (inf when separable)."""
    threshold: float
    lo: float
    hi: float
    slope: float
    separable: bool
    level: float


@dataclass(frozen=True)
class PowerLawFit:
    """log T = alpha log N + c; [alpha_lo, alpha_hi] is the t-interval at `level`; residuals
    are log T - fit, in the input order."""
    alpha: float
    alpha_lo: float
    alpha_hi: float
    c: float
    residuals: np.ndarray
    level: float
    weighted: bool


def logistic_threshold(values, successes, *, direction: str = "above", log: bool = True,
                       level: float = 0.95, at: float = 0.5) -> LogisticFit:
    """Fit P(success) = sigmoid(b (u - t) + logit(at)) to one outcome per (value, seed): t is where the
    success probability crosses `at` (1/2 by default: the logistic's centre); see the module doc.

    Separable data (with `direction` "above": every failure at or below every success, or the
    reverse order) has an infinite MLE slope and no identified threshold: threshold is NaN,
    separable is True and [lo, hi] is the gap between the classes, i.e. the largest value below
    the smallest success and the smallest value above the largest failure (0 or -inf / inf when
    one class is empty). With quasi-separation (both outcomes at one value only) that gap is
    the pair of evaluated values around it."""
    x, y = np.asarray(values, float), np.asarray(successes, bool)
    up = y if direction == "above" else ~y  # outcome 'on the upper side of the threshold'
    gap = _gap(x, up) or _gap(x, ~up)  # order only: the same in log space, exact values
    if gap:
        return LogisticFit(math.nan, max(gap[0], 0.0) if log else gap[0], gap[1], math.inf, True, level)
    u = np.log(x) if log else x
    back = np.exp if log else float
    mu, sd = u.mean(), u.std()
    z = (u - mu) / sd  # standardized so the optimizers see O(1) parameters
    shift = float(special.logit(at))
    t_hat, b_hat, nll_hat = _mle(z, y, shift)
    crit = stats.chi2.ppf(level, 1)
    excess = lambda t: 2 * (_profile(z, y, t, shift) - nll_hat) - crit  # noqa: E731  (< 0 inside)
    lo, hi = (_crossing(excess, t_hat, side) for side in (-1, 1))
    return LogisticFit(float(back(mu + sd * t_hat)), float(back(mu + sd * lo)),
                       float(back(mu + sd * hi)), float(b_hat / sd), False, level)


def fraction_threshold(seeds, values, successes, fraction: float, *, direction: str = "above", log: bool = True,
                       level: float = 0.95) -> dict:
    """Where the fraction of seeds that succeed crosses `fraction`, from one outcome per (seed, value).

    Seeds that succeed at no evaluated value (`never`) or at every one (`always`) set the fraction's plateaus,
    plateau_low = |always| / n and plateau_high = 1 - |never| / n, whatever the direction (a seed that never
    succeeds caps the fraction below 1, where a logistic that must reach 1 cannot fit). The other seeds
    switch, and logistic_threshold fits their outcomes at the level q = (fraction - plateau_low) /
    (plateau_high - plateau_low) that puts the whole fraction at `fraction`. Returns threshold, lo, hi,
    slope, separable, level (LogisticFit's), plateau_low, plateau_high, never, always (seed lists as text)
    and note (why there is no threshold: no seed switches, or the plateaus never reach `fraction`)."""
    df = pd.DataFrame({"seed": np.asarray(seeds), "value": np.asarray(values, float),
                       "success": np.asarray(successes, bool)})
    per_seed = df.groupby("seed").success.agg(["any", "all"])
    never = sorted(int(s) for s in per_seed.index[~per_seed["any"]])
    always = sorted(int(s) for s in per_seed.index[per_seed["all"]])
    low, high = len(always) / len(per_seed), 1 - len(never) / len(per_seed)
    switching = df[~df.seed.isin(never + always)]
    q = (fraction - low) / (high - low) if high > low else math.nan
    out = dict(plateau_low=low, plateau_high=high, never=" ".join(map(str, never)), always=" ".join(map(str, always)),
               note="")
    if switching.empty or not 0 < q < 1:
        note = ("no seed switches between success and failure" if switching.empty else
                f"the success fraction stays between {low:.3g} and {high:.3g} and never crosses {fraction:g}")
        return {**out, **vars(LogisticFit(math.nan, math.nan, math.nan, math.nan, False, level)), "note": note}
    fit = logistic_threshold(switching.value, switching.success, direction=direction, log=log, level=level, at=q)
    return {**out, **vars(fit)}


def _gap(x, up):
    """(lo, hi) between the classes if no 'upper' outcome lies below a 'lower' one, else None."""
    top_low, bottom_up = x[~up].max(initial=-np.inf), x[up].min(initial=np.inf)
    if top_low > bottom_up:
        return None
    return float(x[x < bottom_up].max(initial=-np.inf)), float(x[x > top_low].min(initial=np.inf))


def _nll(eta, y):
    """Bernoulli negative log-likelihood at logits eta: -log sigmoid(+-eta), computed stably."""
    return float(np.sum(np.where(y, np.logaddexp(0, -eta), np.logaddexp(0, eta))))


def _mle(z, y, shift: float = 0.0):
    """(t, b, nll) at the maximum likelihood, t where the logit equals `shift`; fitted as a + b z, which is
    convex in (a, b)."""
    def fun(p):
        eta = p[0] + p[1] * z
        r = special.expit(eta) - y
        return _nll(eta, y), np.array([r.sum(), (r * z).sum()])
    a, b = optimize.minimize(fun, np.zeros(2), jac=True, method="BFGS").x
    t = (shift - a) / b
    # the profile at t is at least as good as BFGS's point, which keeps the deviance >= 0 there
    return t, b, min(fun((a, b))[0], _profile(z, y, t, shift))


def _profile(z, y, t, shift: float = 0.0):
    """min over the slope b of the negative log-likelihood with the threshold fixed at t."""
    res = optimize.minimize_scalar(lambda b: _nll(b * (z - t) + shift, y), bounds=(-_MAX_SLOPE, _MAX_SLOPE),
                                   method="bounded")
    return res.fun


def _crossing(excess, t0, side, step=0.25, doublings=12):
    """Where excess(t) turns positive on one side of t0: steps doubling outward, then brentq;
    +-inf if it stays negative beyond ~1000 standard deviations (the slope is not significant)."""
    inner = t0
    for _ in range(doublings):
        outer = t0 + side * step
        if excess(outer) > 0:
            return optimize.brentq(excess, inner, outer, xtol=1e-8)
        inner, step = outer, 2 * step
    return side * math.inf


def power_law_fit(n, thresholds, *, intervals=None, level: float = 0.95) -> PowerLawFit:
    """Fit log T_i = alpha log N_i + c by least squares; with `intervals` (rows lo_i, hi_i of
    the thresholds) by weighted least squares, w_i = 1 / log(hi_i / lo_i)^2, i.e. each interval
    is read as a fixed multiple of its threshold's log-scale standard error. The covariance is
    s^2 (X' W X)^-1 with s^2 = sum w r^2 / (n - 2), so only relative weights matter, and alpha's
    interval is alpha +- t_{n-2, (1+level)/2} se(alpha). Needs at least 3 points."""
    x, y = np.log(np.asarray(n, float)), np.log(np.asarray(thresholds, float))
    if len(x) < 3 or not np.all(np.isfinite(y)):
        raise ValueError("power_law_fit needs >= 3 finite, positive thresholds")
    w = np.ones_like(x)
    if intervals is not None:
        width = np.diff(np.log(np.asarray(intervals, float)), axis=1)[:, 0]
        if not np.all(np.isfinite(width) & (width > 0)):
            raise ValueError("intervals must be finite, positive and have hi > lo")
        w = 1 / width**2
    X = np.column_stack([x, np.ones_like(x)])
    (alpha, c), *_ = np.linalg.lstsq(X * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)
    r = y - X @ (alpha, c)
    dof = len(x) - 2
    cov = np.sum(w * r**2) / dof * np.linalg.inv(X.T @ (X * w[:, None]))
    half = stats.t.ppf((1 + level) / 2, dof) * math.sqrt(cov[0, 0])
    return PowerLawFit(float(alpha), float(alpha - half), float(alpha + half), float(c), r, level,
                       intervals is not None)
