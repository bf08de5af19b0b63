"""Fits and intervals the studies share (numpy/scipy only). The power law with its t-interval and the logistic
threshold with its profile interval are the threshold search's (sweeps.threshold_stats); here: intervals over seeds
(t and bootstrap), exponents with their next-order correction, several exponents at once, a line's root and a
parabola's vertex.

Conventions: `Y` holds one row per seed and one column per size, `(S, K)`; a statistic of such a table is bootstrapped
by resampling its rows (seeds), which keeps each seed's sizes together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

from ..sweeps.threshold_stats import LogisticFit, PowerLawFit, logistic_threshold, power_law_fit

__all__ = ["Interval", "t_interval", "bootstrap", "loglog_slope", "exponent_with_correction", "expansion_exponent",
           "loglinear_fit", "line_root", "parabola_vertex", "power_law_fit", "logistic_threshold", "PowerLawFit", "LogisticFit"]


@dataclass(frozen=True)
class Interval:
    """A value and its interval [lo, hi] at `level`."""

    value: float
    lo: float
    hi: float
    level: float = 0.95

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def within(self, lo: float, hi: float) -> bool:
        """The whole interval lies in [lo, hi]."""
        return lo <= self.lo and self.hi <= hi


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of per-seed values with its Student-t interval: mean +- t_{S-1} sd / sqrt(S)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        raise ValueError("t_interval needs at least 2 finite values")
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return Interval(float(v.mean()), float(v.mean() - half), float(v.mean() + half), level)


def bootstrap(statistic: Callable[[np.ndarray], float], Y: np.ndarray, level: float = 0.95, draws: int = 1000,
              seed: int = 0) -> Interval:
    """statistic(Y) with the percentile interval of statistic(Y[rows resampled]) over `draws` resamplings of Y's
    rows (seeds). Y: (S, ...). Draws whose statistic is not finite are left out of the percentiles."""
    Y = np.asarray(Y, float)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(Y[rng.integers(0, len(Y), len(Y))]) for _ in range(draws)])
    values = values[np.isfinite(values)]
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2]) if len(values) else (math.nan, math.nan)
    return Interval(float(statistic(Y)), float(lo), float(hi), level)


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of log y against log x (the exponent of y ~ x^p)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(lx, ly, 1)[0])


def exponent_with_correction(h: Sequence[float], err: Sequence[float], order: int = 1) -> float:
    """p of err = C h^p (1 + D_1 h + ... + D_order h^order + ...), the form of a discretization error with an
    asymptotic expansion in its step h (Euler in 1/L, gradient descent in dt): log err = p log h + c + sum_j e_j h^j,
    least squares (order 0: the plain log-log slope); needs order + 3 sizes."""
    h, err = np.asarray(h, float), np.asarray(err, float)
    if len(h) < order + 3:
        raise ValueError(f"exponent_with_correction of order {order} needs at least {order + 3} sizes")
    X = np.column_stack([np.log(h), np.ones_like(h), *[h**j for j in range(1, order + 1)]])
    return float(np.linalg.lstsq(X, np.log(err), rcond=None)[0][0])


def expansion_exponent(h: Sequence[float], E: np.ndarray, order: int = 2, level: float = 0.95) -> Interval:
    """The exponent p of deterministic discretization errors E = C h^p (1 + D_1 h + .. + D_order h^order) of S seeds
    (E: (S, K)): the mean of the per-seed fits at `order` with its t-interval over seeds, widened on both sides by the
    expansion's truncation error, estimated as the median change of the per-seed fits when the last term is dropped
    (the seeds' spread alone is far below the bias of a truncated expansion when the error is deterministic given
    the draw)."""
    fits = np.array([[exponent_with_correction(h, e, k) for k in (order - 1, order)] for e in np.asarray(E, float)])
    iv = t_interval(fits[:, 1], level)
    widen = float(np.median(np.abs(fits[:, 1] - fits[:, 0])))
    return Interval(iv.value, iv.lo - widen, iv.hi + widen, level)


def loglinear_fit(X: np.ndarray, y: Sequence[float], level: float = 0.95) -> list:
    """log y = sum_j a_j log X[:, j] + c by least squares: one Interval per column j (t-intervals on n - k - 1
    degrees of freedom). X: (n, k) positive sizes (e.g. the L and M of each measurement)."""
    X, y = np.asarray(X, float), np.log(np.asarray(y, float))
    A = np.column_stack([np.log(X), np.ones(len(y))])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    dof = len(y) - A.shape[1]
    cov = np.sum((y - A @ coef) ** 2) / dof * np.linalg.inv(A.T @ A)
    t = stats.t.ppf((1 + level) / 2, dof)
    return [Interval(float(coef[j]), float(coef[j] - t * math.sqrt(cov[j, j])), float(coef[j] + t * math.sqrt(cov[j, j])),
                     level) for j in range(X.shape[1])]


def line_root(x: Sequence[float], y: Sequence[float]) -> float:
    """Where the least-squares line through (x, y) crosses 0 (NaN for a flat line)."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    return float(-intercept / slope) if slope != 0 else math.nan


def parabola_vertex(x: Sequence[float], y: Sequence[float]) -> float:
    """The minimizer of y over a grid x refined by the parabola through the grid minimum and its two neighbours
    (the grid minimum itself at an end of the grid, or where the parabola opens downwards)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    finite = np.isfinite(y)
    if not finite.any():
        return math.nan
    k = int(np.argmin(np.where(finite, y, np.inf)))
    if k == 0 or k == len(x) - 1 or not np.isfinite(y[k - 1:k + 2]).all():
        return float(x[k])
    a, b, _ = np.polyfit(x[k - 1:k + 2], y[k - 1:k + 2], 2)
    return float(-b / (2 * a)) if a > 0 else float(x[k])
