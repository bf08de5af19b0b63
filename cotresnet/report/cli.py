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
from .sweep import METRICS, collect, count_statuses, read_yaml, run_dirs, swept_keys


def _atomic_frame(df: pd.DataFrame, path: Path, kind: str) -> None:
    from ..rundir.atomic import atomic_write_bytes

    buf = io.BytesIO()
    if kind == "csv":
        buf.write(df.to_csv(index=False).encode())
    else:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def report_metrics(sweep_dir: Path) -> List[str]:
    """The metrics an experiment names for its figures (report.metrics of its jobs), else METRICS."""
    for j in run_dirs(sweep_dir):
        try:
            cfg = read_yaml(RD.config_path(j)) or {}
        except RD.RunDirError:
            continue
        named = ((cfg.get("report") or {}).get("metrics") or []) if isinstance(cfg, dict) else []
        if named:
            return list(named)
    return METRICS


def report(sweep_dir: Path, out: Path = None, metrics: List[str] = None) -> Dict[str, object]:
    from ..sweeps.threshold_tables import SEARCH
    from .figures import sweep_figures
    from .threshold import threshold_report

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir / RD.REPORT
    out.mkdir(parents=True, exist_ok=True)
    df = collect(sweep_dir)
    keys = swept_keys(sweep_dir)
    if not df.empty:
        _atomic_frame(df, out / "report.csv", "csv")
        _atomic_frame(df, out / "report.parquet", "parquet")
    written = sweep_figures(df, keys, out, metrics or report_metrics(sweep_dir)) if not df.empty else []
    threshold = None
    if (sweep_dir / SEARCH).is_file():  # a threshold search: its boundary, fits and scaling law
        threshold = threshold_report(sweep_dir, out)
        written += threshold["figures"]
    return {"table": df, "swept": keys, "figures": written, "line": count_statuses(sweep_dir), "out": out,
            "threshold": threshold}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="default: SWEEP_DIR/report")
    ap.add_argument("--metric", action="append", help=f"metrics to draw (default: the experiment's, or {', '.join(METRICS)})")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"cotresnet-report: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    r = report(args.sweep_dir, args.out, args.metric)
    print(r["line"])
    if r["threshold"]:
        print("\n".join(r["threshold"]["lines"]))
    print(f"swept keys: {', '.join(r['swept']) or 'none'}; table: {r['out'] / 'report.csv'} (+ .parquet); "
          f"{len(r['figures'])} figures in {r['out']}")
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
    bad = [d for d in args.run_dirs if not (d / RD.METRICS).is_file()]
    if bad:
        print(f"cotresnet-plot: {bad[0]} is not a run directory ({RD.METRICS} is missing)", file=sys.stderr)
        return 2
    for d in args.run_dirs:
        try:
            for path in plot_run(d, args.format):
                print(path)
        except RD.RunDirError as e:
            print(f"cotresnet-plot: {e}", file=sys.stderr)
            return 2
    return 0
