"""One style for every figure of a report: how a metric is labelled, how an unfinished job is marked, when an
axis is logarithmic."""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

# how each unfinished status is marked: (marker, colour, legend label)
MARKS = {"diverged": ("^", "tab:red", "diverged"), "failed": ("X", "black", "failed"),
         "corrupt": ("X", "black", "failed"), "incomplete": ("o", "0.55", "incomplete"),
         "interrupted": ("o", "0.55", "incomplete")}
LABELS = {
    "log10_risk_ratio": "log10(final risk / initial risk)", "risk_train": "training risk (1/2 mean squared error)",
    "risk_test": "test risk (1/2 mean squared error)", "min_pl_ratio": "min P-L ratio G/L (1 / flow time)",
    "pl_ratio": "P-L ratio G/L (1 / flow time)", "lambda_min_tangent_init": "lambda_min of K at init",
    "lambda_min_tangent": "lambda_min of K (final)", "lambda_min_feature": "lambda_min of K_l (min over layers)",
    "lambda_min_feature_mean": "lambda_min of K_l (mean over layers)",
    "lambda_min_feature_init": "lambda_min of K_l at init (min over layers)", "path_over_radius": "path length / R0",
    "accuracy_test": "test accuracy (fraction)", "accuracy_train": "training accuracy (fraction)",
    "cot_dist_init": "W_COT(mu_t, mu_0)", "wall_time_s": "wall time (s)", "c0": "certified rate c0 (1 / flow time)",
    "flow_time": "flow time t", "depth_w2_uniform": "W_2(depth marginal, uniform)",
    "depth_effective_layers": "effective number of layers", "depth_max_gap": "largest depth gap",
}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def spans_decades(values, decades: float) -> bool:
    """True when all values are positive and max / min exceeds 10**decades."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return len(v) > 1 and (v > 0).all() and v.max() / v.min() > 10**decades


def subplots(*args, **kwargs):
    """(figure, axes) like pyplot.subplots, without pyplot: no backend is chosen (a notebook's stays as it
    is) and nothing is kept alive after the figure is saved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def colours(name: str, n: int):
    """A colormap of `name` resampled to max(n, 2) colours."""
    import matplotlib

    return matplotlib.colormaps[name].resampled(max(n, 2))


def save_figure(fig, stem: Path, formats=("png",), dpi: int = 110) -> List[Path]:
    """The figure as stem.<format> for each format, each written atomically; returns the paths."""
    import io

    from ..rundir.atomic import atomic_write_bytes

    fig.tight_layout()
    paths = []
    for ext in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=dpi)
        path = Path(stem).parent / f"{Path(stem).name}.{ext}"
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths
