"""The studies' figures: measured points with their seed band, the fitted law with its interval in the legend, and
the reference the theory gives drawn dashed. Built on the report's style (Figure API, no pyplot)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..report.style import colours, spans_decades, subplots
from .stats import Interval


def panels(n: int, width: float = 5.0, height: float = 4.0):
    """(figure, list of n axes) side by side."""
    fig, axes = subplots(1, n, figsize=(width * n, height))
    return fig, list(np.atleast_1d(axes))


def palette(n: int, name: str = "viridis"):
    """n distinct colours (a colormap resampled, its bright end left out)."""
    cmap = colours(name, n + 1)
    return [cmap(i) for i in range(n)]


def seeds_band(ax, x: Sequence[float], Y: np.ndarray, colour, label: str, marker: str = "o") -> np.ndarray:
    """The median over seeds at each x (markers, joined) with the band between the 10th and 90th percentiles.
    Y: (S, K) one row per seed (or (K,) one value per x); returns the medians (K,)."""
    Y = np.atleast_2d(np.asarray(Y, float))
    mid = np.nanmedian(Y, axis=0)
    ax.plot(x, mid, marker=marker, color=colour, label=label, lw=1.2)
    if Y.shape[0] > 1:
        lo, hi = np.nanpercentile(Y, [10, 90], axis=0)
        ax.fill_between(x, lo, hi, color=colour, alpha=0.18, lw=0)
    return mid


def fitted_power_law(ax, x: Sequence[float], y: Sequence[float], fit: Interval, colour, name: str = "fit",
                     variable: str = "x") -> None:
    """y ~ x^p with the fitted exponent p, anchored at the geometric means of (x, y); the legend gives p and its
    interval."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    ok = np.isfinite(lx) & np.isfinite(ly)
    c = ly[ok].mean() - fit.value * lx[ok].mean()
    grid = np.exp(np.linspace(lx[ok].min(), lx[ok].max(), 50))
    ax.plot(grid, np.exp(c) * grid**fit.value, color=colour, lw=2.2, alpha=0.55,
            label=f"{name}: ${variable}^{{{fit.value:.2f}}}$ [{fit.lo:.2f}, {fit.hi:.2f}] ({fit.level:.0%})")


def reference_power_law(ax, x: Sequence[float], y0: float, slope: float, label: str, colour="black") -> None:
    """The theory's law y0 (x / x[0])^slope, dashed, from the first measured point."""
    x = np.asarray(x, float)
    ax.plot(x, y0 * (x / x[0]) ** slope, ls="--", color=colour, lw=1.0, label=label)


def finish(ax, xlabel: str, ylabel: str, title: Optional[str] = None, logx: bool = True,
           logy: Optional[bool] = None, values: Optional[Sequence[float]] = None,
           ticks: Optional[Sequence[float]] = None) -> None:
    """Labels, a legend, log axes (y: when `values` span more than a decade, unless `logy` says); `ticks`: the
    measured x values, labelled plainly (16, 32, 64 rather than powers of ten)."""
    if logx:
        ax.set_xscale("log")
    if ticks is not None:
        from matplotlib.ticker import NullFormatter

        ax.set_xticks(list(ticks), [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    if logy or (logy is None and values is not None and spans_decades(np.ravel(values).tolist(), 1)):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=7)
