"""Two runs side by side: what differs in their configurations, their summaries in one table, their curves on
one figure.

    cotresnet-compare RUN_A RUN_B [--out FILE.png] [--format png pdf svg]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..rundir import contract as RD
from .style import DOUBLE, label, log_axis, save_figure, styled, subplots

# the summary numbers compared: (name, where in summary.json)
SUMMARY_ROWS = [
    ("status", ("status",)), ("steps", ("steps",)), ("flow time t", ("flow_time",)), ("wall time (s)", ("wall_time_s",)),
    ("initial risk", ("risk_init",)), ("final training risk", ("final", "risk_train")),
    ("final test risk", ("final", "risk_test")), ("test accuracy", ("final", "accuracy_test")),
    ("min P-L ratio", ("min_pl_ratio",)), ("lambda_min(K) at init", ("certificate", "lambda_min_tangent_init")),
    ("lambda_min(K) final", ("final", "lambda_min_tangent")), ("certified rate c0", ("certificate", "c0")),
    ("guaranteed factor", ("certificate", "guaranteed_factor")), ("observed factor", ("certificate", "observed_factor")),
    ("certified radius", ("certificate", "certified_radius")), ("path length", ("final", "path_length")),
    ("W_COT(mu_t, mu_0)", ("final", "cot_dist_init")), ("inside the region", ("certificate", "inside_certified_region")),
]


def _get(obj, path):
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _text(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def config_differences(a: Path, b: Path) -> List[Tuple[str, str, str]]:
    """(key, A's value, B's value) for every configuration value that differs (hydra and paths left out)."""
    from .sweep import read_yaml

    fa, fb = (RD.flatten(read_yaml(RD.config_path(d)) or {}) for d in (a, b))
    keys = [k for k in dict.fromkeys([*fa, *fb]) if not k.startswith(("hydra.", "paths."))]
    return [(k, _text(fa.get(k)), _text(fb.get(k))) for k in keys if fa.get(k) != fb.get(k)]


def run_names(a: Path, b: Path) -> Tuple[str, str]:
    """The two runs' names: their directories', or where those are equal (`seed=0` in two jobs of a sweep)
    their paths below the directory they share."""
    if a.name != b.name:
        return a.name, b.name
    common = Path(os.path.commonpath([a.resolve(), b.resolve()]))
    return str(a.resolve().relative_to(common)), str(b.resolve().relative_to(common))


def comparison_lines(a: Path, b: Path) -> List[str]:
    """The configuration differences and the summaries side by side, with B / A for numbers."""
    sa, sb = RD.read_summary(a) or {}, RD.read_summary(b) or {}
    diffs = config_differences(a, b)
    name_a, name_b = run_names(a, b)
    rows = [("", f"A: {name_a}", f"B: {name_b}", "B / A")]
    rows += [(k, va, vb, "") for k, va, vb in diffs] or [("(same configuration)", "", "", "")]
    rows.append(("", "", "", ""))
    for name, path in SUMMARY_ROWS:
        va, vb = _get(sa, path), _get(sb, path)
        ratio = ""
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (va, vb)) and va and math.isfinite(va):
            ratio = f"{vb / va:.4g}"
        rows.append((name, _text(va), _text(vb), ratio))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, width)).rstrip() for r in rows]


def _curve(ax, df, column, colour, style="-", until: float = math.inf) -> None:
    if df is None or column not in df:
        return
    sub = df[["flow_time", column]].dropna()
    sub = sub[(sub[column] > 0) & (sub["flow_time"] <= until)]
    if len(sub):
        sparse = len(sub) < 0.5 * len(df) or len(sub) < 8  # measured at a few steps: markers, no line between
        ax.plot(sub["flow_time"], sub[column], marker="o" if sparse else None, ls="none" if sparse else style,
                mfc="none" if style != "-" else colour, color=colour, ms=3.5, lw=1.0)


def shown_time(statuses: List[Optional[str]], tables) -> float:
    """The flow time up to which the figure draws: where one run diverged and the other did not, the other's
    last time (a blow-up to 1e35 would squash the run that did not blow up into a corner), else all of it."""
    kept = [t for s, t in zip(statuses, tables) if s != "diverged" and t is not None and len(t)]
    if len(kept) == len(tables) or not kept:
        return math.inf
    return max(float(t["flow_time"].max()) for t in kept)


def short_name(name: str, width: int = 36) -> str:
    """A run directory's name within `width` characters, its middle elided (sweep job names run long)."""
    return name if len(name) <= width else f"{name[:width // 2 - 1]}…{name[-(width - width // 2):]}"


@styled
def compare_figure(a: Path, b: Path, out: Path, formats=("png",)) -> List[Path]:
    """Risk, P-Ł ratio, λ_min(K) and distance to μ₀ of both runs against flow time, one colour per run and one
    line style per quantity, explained once above the panels. A diverged run is drawn up to the other's last
    time, its legend entry saying so."""
    from matplotlib.lines import Line2D

    tables, statuses = [], []
    for d in (a, b):
        try:
            tables.append(RD.read_table(d))
        except RD.RunDirError:
            tables.append(None)
        try:
            statuses.append(RD.read_summary(d).get("status"))
        except RD.RunDirError:
            statuses.append(None)
    until = shown_time(statuses, tables)
    fig, axes = subplots(2, 2, width=DOUBLE, height=5.0)
    runs = []
    # a long name (a sweep's job) is elided in its middle, where the value that differs often sits: then the
    # legend names the runs by what differs in their configurations instead
    names = run_names(a, b)
    differ = config_differences(a, b)
    if differ and any(len(n) > 36 for n in names):
        names = tuple(short_name(", ".join(f"{k}={row[i]}" for k, *row in differ[:3]), 60) for i in (0, 1))
    for letter, name, colour, m, status in zip("AB", names, ("tab:blue", "tab:orange"), tables, statuses):
        note = ""
        if status == "diverged" and math.isfinite(until):
            note = f" (diverged; drawn to t = {until:.3g})"
        runs.append(Line2D([], [], color=colour, lw=2, label=f"{letter}: {short_name(name, 60)}{note}"))
        _curve(axes[0, 0], m, "risk_train", colour, "-", until)
        _curve(axes[0, 0], m, "risk_test", colour, "--", until)
        _curve(axes[0, 1], m, "pl_ratio", colour, "-", until)
        _curve(axes[1, 0], m, "lambda_min_tangent", colour, "-", until)
        _curve(axes[1, 1], m, "path_length", colour, "-", until)
        _curve(axes[1, 1], m, "cot_dist_init", colour, ":", until)
    # a quantity measured at a few steps is drawn as markers (_curve): filled on the solid style, open otherwise
    styles = [Line2D([], [], color="0.3", ls=ls, lw=1.0, marker="o", ms=3.5, mfc="0.3" if ls == "-" else "none",
                     label=text) for ls, text in (("-", "training risk; path length"), ("--", "test risk"),
                                                  (":", r"$W_{\mathrm{COT}}(\mu_t, \mu_0)$"))]
    fig.legend(handles=runs + styles, loc="upper center", ncol=2, fontsize=7, frameon=False, bbox_to_anchor=(0.5, 1.0))
    titles = [("(a) risk", r"risk $\mathcal{L}$"), ("(b) Polyak-Łojasiewicz ratio", label("pl_ratio")),
              ("(c) tangent kernel", label("lambda_min_tangent")), ("(d) transport from μ₀", "distance to μ₀")]
    shown = [float(t["flow_time"].max()) for t in tables if t is not None and len(t)]
    right = (min(until, max(shown)) if shown else 0.0) or 1.0
    for ax, (title, ylabel) in zip(axes.flat, titles):
        ax.set_title(title)
        ax.set_xlim(-0.03 * right, 1.03 * right)  # one time axis for every panel, whatever each measured
        ax.set_xlabel(label("flow_time"))
        ax.set_ylabel(ylabel)
        if ax.lines:
            log_axis(ax)
        else:
            ax.text(0.5, 0.5, "not measured in either run", ha="center", va="center", transform=ax.transAxes)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.8, bottom=0.09, hspace=0.6, wspace=0.3)
    return save_figure(fig, out, formats)  # cropped to what is drawn: no label is cut at an edge


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="the figure's path: FILE.png, .pdf or .svg, or FILE "
                    "without an extension for one file per --format (default: ./compare_<A>_<B>.png)")
    ap.add_argument("--format", nargs="+", default=None, choices=["png", "pdf", "svg"],
                    help="default: the --out file's extension, else png")
    args = ap.parse_args(argv)
    for d in (args.run_a, args.run_b):
        if not d.exists():
            print(f"cotresnet-compare: {d} does not exist", file=sys.stderr)
            return 2
        if not (d / RD.METRICS).is_file():
            print(f"cotresnet-compare: {d} is not a run directory ({RD.METRICS} is missing)", file=sys.stderr)
            return 2
    try:
        print("\n".join(comparison_lines(args.run_a, args.run_b)))
        out = args.out or Path(RD.safe_dirname("compare_{}_{}".format(*run_names(args.run_a, args.run_b))))
        given = out.suffix.lstrip(".") if out.suffix in (".png", ".pdf", ".svg") else None
        if given and args.format and args.format != [given]:
            print(f"cotresnet-compare: --out {out} is a .{given} file, --format asks for {' '.join(args.format)}: "
                  "give --out without an extension for several formats", file=sys.stderr)
            return 2
        formats = args.format or [given or "png"]
        for path in compare_figure(args.run_a, args.run_b, out.with_suffix("") if given else out, formats):
            print(path)
    except RD.RunDirError as e:
        print(f"cotresnet-compare: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
