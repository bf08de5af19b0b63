"""One paper style for every figure cotresnet draws (run figures, sweep report, threshold and study figures):
labels in the paper's symbols (mathtext), how an unfinished job is marked, when an axis is logarithmic,
one-column and two-column sizes, atomic saving in the formats asked for. No pyplot: a notebook's backend
stays as it is."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

# how each unfinished status is marked: (marker, colour, legend label)
MARKS = {"diverged": ("^", "tab:red", "diverged"), "failed": ("X", "black", "failed"),
         "corrupt": ("X", "black", "failed"), "incomplete": ("o", "0.55", "incomplete"),
         "interrupted": ("o", "0.55", "incomplete"), "max_steps": ("o", "tab:blue", "step budget"),
         "converged": ("*", "tab:green", "converged")}
# one marker per line of a panel, beside its colour (a figure printed in grey stays readable)
MARKERS = "osD^vP<>hX"
# metrics and configuration keys in the paper's symbols
LABELS = {
    "log10_risk_ratio": r"$\log_{10}\,\mathcal{L}(t)/\mathcal{L}(0)$", "risk_train": r"training risk $\mathcal{L}$",
    "risk_test": r"test risk", "risk_init": r"initial risk $\mathcal{L}(0)$",
    "min_pl_ratio": r"$\min_t\, G/\mathcal{L}$", "pl_ratio": r"P-Ł ratio $G/\mathcal{L}$",
    "lambda_min_tangent_init": r"$\lambda_{\min}(K(\mu_0))$", "lambda_min_tangent": r"$\lambda_{\min}(K(\mu_t))$",
    "lambda_min_feature": r"$\min_l \lambda_{\min}(K_l)$", "lambda_min_feature_mean": r"mean$_l\,\lambda_{\min}(K_l)$",
    "lambda_min_feature_init": r"$\min_l \lambda_{\min}(K_l(\mu_0))$", "path_over_radius": r"path length $/\,R_0$",
    "accuracy_test": "test accuracy", "accuracy_train": "training accuracy",
    "cot_dist_init": r"$W_{\mathrm{COT}}(\mu_t, \mu_0)$", "wall_time_s": "wall time (s)",
    "c0": r"certified rate $c_0$", "flow_time": r"flow time $t$", "depth_w2_uniform": r"$W_2$(depths, uniform)",
    "depth_effective_layers": "effective layers", "depth_max_gap": "largest depth gap",
    "path_length": "path length", "grad_norm2": r"$G$", "certified_radius": r"certified radius $R_0$",
    "observed_factor": r"$\mathcal{L}(t)/\mathcal{L}(0)$", "guaranteed_factor": r"$e^{-c_0 t}$",
    "model.L": r"depth $L$", "model.M": r"width $M$", "model.d": r"state dimension $d$",
    "init.scale_u": r"initial scale $s_u$", "init.scale_w": r"initial scale $s_w$", "init.scale_b": r"initial scale $s_b$",
    "optim.dt": r"step $\Delta t$", "data.n_train": r"samples $N$", "optim.depth_weight": r"depth weight $\kappa$",
    "model.activation": r"activation $\sigma$", "optim.geometry": "geometry", "seed": "seed",
    "data.teacher.scale": "teacher scale", "optim.parameterization": "parameterization", "data": "dataset",
    "model.bandwidth": r"bandwidth $h$", "model.integrator": "integrator",
    "model.M/data.n_train": r"width per sample $M/N$", "risk_predicted": r"flow's prediction of $\mathcal{L}$",
    "depth_path_length": "depth path length", "lambda_max_tangent": r"$\lambda_{\max}(K)$",
}
# the swept keys' bare symbols, for short text (a table's header, a fit's formula, a panel's title)
SYMBOLS = {"model.M": "M", "model.L": "L", "model.d": "d", "init.scale_u": "s_u", "init.scale_w": "s_w",
           "init.scale_b": "s_b", "data.n_train": "N", "optim.dt": "Δt", "optim.depth_weight": "κ",
           "model.activation": "σ", "optim.geometry": "geometry", "data": "dataset", "seed": "seed",
           "model.M/data.n_train": "M/N"}


def symbol_text(combination: str) -> str:
    """`data.n_train=32,model.L=4` as `N = 32, L = 4` (keys without a symbol stay as they are)."""
    parts = [p.split("=", 1) for p in str(combination).split(",") if "=" in p]
    return ", ".join(f"{SYMBOLS.get(k, k)} = {v}" for k, v in parts) if parts else str(combination)


# sizes in inches: a column and a page of a two-column paper
SINGLE, DOUBLE = 3.4, 7.0
PAPER_RC = {"axes.titley": 1.02, "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 6.5,
            "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
            "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False, "savefig.dpi": 150,
            "mathtext.fontset": "cm", "axes.titlelocation": "left"}


def warm_up() -> None:
    """Import matplotlib's figure and Agg canvas and load the style's fonts, in the background of a job that
    will draw its figure: while training computes in C (without Python's lock) the second core imports, and the
    figure costs only its drawing once the job ends."""
    import matplotlib
    from matplotlib import font_manager
    from matplotlib.backends import backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401

    with matplotlib.rc_context(PAPER_RC):
        font_manager.findfont(font_manager.FontProperties(family=matplotlib.rcParams["font.family"]))


def label(name: str) -> str:
    """A metric's or a configuration key's label in the paper's symbols (the name itself when unknown)."""
    return LABELS.get(name, name)


def spans_decades(values, decades: float) -> bool:
    """True when all values are positive and max / min exceeds 10**decades."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return len(v) > 1 and (v > 0).all() and v.max() / v.min() > 10**decades


def styled(draw):
    """Run a function that draws figures under the paper style (matplotlib reads its rc settings when an
    artist is made, so the whole drawing runs inside the style, not only the figure's creation)."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(PAPER_RC):
            return draw(*args, **kwargs)

    return wrapper


def subplots(*args, width: float = SINGLE, height: float = None, **kwargs):
    """(figure, axes) like pyplot.subplots, without pyplot: no backend is chosen and nothing is kept alive
    after the figure is saved. `width`: SINGLE or DOUBLE (or inches). Draw inside `styled`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", (width, height or 0.75 * width)))
    return fig, fig.subplots(*args, **kwargs)


def palette(n: int) -> list:
    """n colours that a reader tells apart: tab10's for up to 10 (no two values in one colour), else viridis."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    cmap = colours("viridis", n)
    return [cmap(i) for i in range(n)]


def colours(name: str, n: int):
    """A colormap of `name` resampled to max(n, 2) colours."""
    import matplotlib

    return matplotlib.colormaps[name].resampled(max(n, 2))


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(value: float, _pos=None) -> str:
    """10⁻³ for a power of ten, 2×10⁻⁴ or 0.2 otherwise, as plain text: what the eye reads on a log axis,
    without a mathtext parse per label (the slowest part of drawing a figure of several log axes)."""
    if value <= 0 or not np.isfinite(value):
        return ""
    exponent = int(np.floor(np.log10(value) + 1e-9))
    mantissa = value / 10.0**exponent
    power = "1" if exponent == 0 else "10" + str(exponent).translate(_SUPERSCRIPT)
    if abs(mantissa - round(mantissa)) < 1e-6 and round(mantissa) == 1:
        return power
    if -2 <= exponent <= 3:
        return f"{value:.4g}"
    return f"{round(mantissa) if abs(mantissa - round(mantissa)) < 1e-6 else round(mantissa, 1):g}×{power}"


def _log_locator():
    """Decades, and 2 and 5 between them where the axis spans less than about one and a half decades, every
    integer multiple where even those leave fewer than two ticks (a narrow log axis would show one, or none)."""
    from matplotlib.ticker import LogLocator

    class PaperLogLocator(LogLocator):
        def tick_values(self, vmin, vmax):
            lo, hi = sorted((vmin, vmax))
            for subs in ((1.0, 2.0, 5.0), tuple(float(k) for k in range(1, 10))) if lo > 0 and hi / lo < 30 else ((1.0,),):
                self.set_params(subs=subs)
                ticks = super().tick_values(vmin, vmax)
                if ((ticks >= lo * (1 - 1e-9)) & (ticks <= hi * (1 + 1e-9))).sum() >= 2:
                    break
            return ticks

    return PaperLogLocator(numticks=6)


def log_axis(ax, which: str = "y") -> None:
    """A log scale labelled 10⁻³, 2×10⁻⁴ (decade_label), with ticks between decades on a narrow range."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    axis.set_major_locator(_log_locator())
    axis.set_major_formatter(FuncFormatter(decade_label))
    axis.set_minor_locator(NullLocator())  # minor ticks cost a third of drawing a figure of log axes


def small_numbers(ax, values, which: str = "y") -> None:
    """A linear axis of very small or large numbers in units of their power of ten: ticks 1.2, 1.4 and the
    label's "(×10⁻³)", as a paper writes them, not matplotlib's offset text."""
    from matplotlib.ticker import FuncFormatter

    top = float(np.nanmax(np.abs(np.asarray(values, float))))
    if not np.isfinite(top) or top == 0:
        return
    exponent = int(np.floor(np.log10(top)))
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / 10.0**exponent:.3g}"))
    axis.set_label_text(f"{axis.get_label_text()} (×10{str(exponent).translate(_SUPERSCRIPT)})")


def log_ticks(ax, values: Sequence[float], which: str = "x") -> None:
    """A log axis with a tick at each swept value (and no minor ticks): the values a reader looks for."""
    from matplotlib.ticker import FixedLocator, NullLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(FixedLocator(sorted(values)))
    axis.set_major_formatter(__import__("matplotlib").ticker.FixedFormatter([f"{v:g}" for v in sorted(values)]))
    axis.set_minor_locator(NullLocator())


def outside_legend(ax, **kwargs) -> None:
    """The legend beside the axes, never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if labels:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def save_figure(fig, stem: Path, formats=("png",), tight: bool = True) -> List[Path]:
    """The figure as stem.<format> for each format (png, pdf, svg: vector output on request), each written
    atomically; returns the paths. `tight`: crop to the drawn artists (one more layout pass; a figure laid
    out by hand skips it)."""
    import io

    from ..rundir.atomic import atomic_write_bytes

    paths = []
    for ext in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, **({"bbox_inches": "tight"} if tight else {}))
        path = Path(stem).parent / f"{Path(stem).name}.{ext}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
