"""The sweep report: every job of a sweep directory in one table, and the study's figures.

    cotresnet-report SWEEP_DIR [--out DIR] [--metric KEY ...]
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Dict, List

import pandas as pd

from ..rundir import contract as RD
from .sweep import METRICS, collect, count_statuses, holds_runs, read_yaml, run_dirs, swept_keys


def _atomic_frame(df: pd.DataFrame, path: Path, kind: str) -> None:
    from ..rundir.atomic import atomic_write_bytes

    buf = io.BytesIO()
    if kind == "csv":
        buf.write(df.to_csv(index=False).encode())
    else:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def report_settings(sweep_dir: Path) -> Dict[str, object]:
    """What an experiment says about its report (report.metrics, report.x of its runs), else the defaults."""
    for j in run_dirs(sweep_dir):
        try:
            cfg = read_yaml(RD.config_path(j)) or {}
        except RD.RunDirError:
            continue
        settings = (cfg.get("report") or {}) if isinstance(cfg, dict) else {}
        return {"metrics": list(settings.get("metrics") or []) or METRICS, "x": settings.get("x")}
    return {"metrics": METRICS, "x": None}


def report_metrics(sweep_dir: Path) -> List[str]:
    """The metrics an experiment names for its figures (report.metrics of its runs), else METRICS."""
    return report_settings(sweep_dir)["metrics"]


def report(sweep_dir: Path, out: Path = None, metrics: List[str] = None, formats=("png",)) -> Dict[str, object]:
    """The sweep's table (report.csv, report.parquet), figures, threshold tables and report.html in `out`
    (default SWEEP_DIR/report); returns what it wrote and found."""
    from ..sweeps.threshold_tables import SEARCH
    from .figures import sweep_figures

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir / RD.REPORT
    df = collect(sweep_dir)
    unknown = [m for m in metrics or [] if not df.empty and m not in df]
    if unknown:
        raise ValueError(f"--metric {', '.join(unknown)}: not a column of the sweep's table; one of "
                         f"{', '.join(sorted(c for c in df.columns if not c.startswith(('cfg.', 'sweep.'))))}")
    out.mkdir(parents=True, exist_ok=True)
    keys = swept_keys(sweep_dir)
    settings = report_settings(sweep_dir)
    if not df.empty:
        _atomic_frame(df, out / "report.csv", "csv")
        _atomic_frame(df, out / "report.parquet", "parquet")
    search = (sweep_dir / SEARCH).is_file()  # a threshold search: its own figures, not a grid's metric pages
    written, warnings = sweep_figures(df, keys, out, [] if search else metrics or settings["metrics"], formats,
                                      settings["x"]) if not df.empty else ([], ["no runs found"])
    threshold = None
    if search:  # its boundary, fits and scaling law
        from .threshold import threshold_report

        threshold = threshold_report(sweep_dir, out, formats)
        written += threshold["figures"]
        warnings += threshold["warnings"]
    _remove_stale_pages(out, written)
    warnings += run_warnings(df)
    result = {"table": df, "swept": keys, "figures": written, "line": count_statuses(sweep_dir, df), "out": out,
              "threshold": threshold, "warnings": warnings}
    from .html import write_report_html

    result["html"] = write_report_html(sweep_dir, result)
    return result


def report_at_end(sweep_dir: Path) -> None:
    """The sweep's report once it ends, what it found printed (a failure logged: the runs are safe on disk)."""
    import logging

    try:
        r = report(sweep_dir)
    except Exception as e:
        logging.getLogger("cotresnet").error("the sweep report failed (%s: %s); draw it with: cotresnet-report %s",
                                             type(e).__name__, e, sweep_dir)
        return
    if r["threshold"]:
        print("\n".join(r["threshold"]["lines"]))
    for w in r["warnings"]:
        print(f"warning: {w}")
    print(f"report: {r['html']}", flush=True)


# every page a report draws: one left from an earlier report that this one does not draw would pass for current
PAGES = ("metrics", "heatmaps", "risk_curves", "geometry", "threshold_phase_diagram", "threshold_fractions")


def _remove_stale_pages(out: Path, written: List[Path]) -> None:
    kept = {Path(p).name for p in written}
    for page in PAGES:
        for f in out.glob(f"{page}.*"):
            if f.suffix in (".png", ".pdf", ".svg") and f.name not in kept:
                f.unlink()


def run_warnings(df) -> List[str]:
    """What a reader must know about the runs before reading a figure: runs that failed, diverged or stopped
    early; finished runs whose risk ended above where it began (blown up, though finite); runs outside the
    theorem's conditions. Printed by cotresnet-report and at a sweep's end, and listed first on report.html."""
    if df.empty:
        return []
    warnings = []
    for status in ("failed", "corrupt", "diverged", "incomplete", "interrupted"):
        names = df[df["status"] == status]["job"].tolist()
        if names:
            warnings.append(f"{len(names)} run(s) {status}: " + ", ".join(names[:8]) + (" …" if len(names) > 8 else ""))
    if "log10_risk_ratio" in df:
        grown = df[df["status"].isin(RD.FINISHED) & (df["log10_risk_ratio"] > 0)]
        if not grown.empty:
            names = ", ".join(f"{job} (x{10 ** r:.3g})" for job, r in zip(grown["job"], grown["log10_risk_ratio"]))
            warnings.append(f"{len(grown)} finished run(s) ended above their initial risk (blown up, yet finite: not "
                            f"diverged): {names}")
    if "theorem" in df:
        outside = df["theorem"].dropna()
        outside = outside[outside != "yes"]
        if len(outside):
            warnings.append(f"{len(outside)} of {len(df)} runs are outside the theorem's conditions (their certificate "
                            "is a measurement there, not a proof): see the runs table's column 'theorem' for the "
                            "condition each lacks")
    return warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="default: SWEEP_DIR/report")
    ap.add_argument("--metric", action="append", help=f"metrics to draw (default: the experiment's, or {', '.join(METRICS)})")
    ap.add_argument("--format", nargs="+", default=["png"], choices=["png", "pdf", "svg"],
                    help="figure formats (pdf, svg: vector output for a paper)")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"cotresnet-report: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if not holds_runs(args.sweep_dir) and any((args.sweep_dir / f).is_file() for f in (RD.SUMMARY, RD.METRICS)):
        print(f"cotresnet-report: {args.sweep_dir} is a run directory, not a sweep: its figure is drawn by cotresnet-plot "
              f"{args.sweep_dir} (into {RD.PLOTS}/), cotresnet-compare puts two runs side by side", file=sys.stderr)
        return 2
    if not run_dirs(args.sweep_dir):
        print(f"cotresnet-report: no runs found under {args.sweep_dir} (a sweep directory holds run directories, "
              "each with .hydra/config.yaml)", file=sys.stderr)
        return 2
    try:
        r = report(args.sweep_dir, args.out, args.metric, args.format)
    except ValueError as e:  # a wrong metric name: refused before any file is written
        print(f"cotresnet-report: {e}", file=sys.stderr)
        return 2
    print(r["line"])
    if r["threshold"]:
        print("\n".join(r["threshold"]["lines"]))
    for w in r["warnings"]:
        print(f"warning: {w}")
    print(f"swept keys: {', '.join(r['swept']) or 'none'}; table: {r['out'] / 'report.csv'} (+ .parquet); "
          f"{len(r['figures'])} figures in {r['out']}; open {r['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def plot_main(argv=None) -> int:
    """cotresnet-plot RUN_DIR [RUN_DIR ...] [--format png pdf svg]: draw runs' figures (plots/run.<format>)."""
    from .run_figures import plot_run

    ap = argparse.ArgumentParser(prog="cotresnet-plot", description=plot_main.__doc__.split(": ", 1)[1])
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--format", nargs="+", default=["png"], choices=["png", "pdf", "svg"])
    args = ap.parse_args(argv)
    for d in args.run_dirs:
        if not (d / RD.METRICS).is_file():
            why = "does not exist" if not d.exists() else (
                "holds runs, not one (cotresnet-report draws a sweep's figures)" if holds_runs(d) else
                f"is not a run directory ({RD.METRICS} is missing)")
            print(f"cotresnet-plot: {d} {why}", file=sys.stderr)
            return 2
    for d in args.run_dirs:
        try:
            for path in plot_run(d, args.format):
                print(path)
        except RD.RunDirError as e:
            print(f"cotresnet-plot: {e}", file=sys.stderr)
            return 2
    return 0
