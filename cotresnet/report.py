"""The sweep report: every job of a sweep directory in one table, and the study's figures.

    cotresnet-report SWEEP_DIR [--out DIR] [--metric KEY ...]

A job is any directory below SWEEP_DIR holding `.hydra/config.yaml` (a vectorized job's replicas are
its jobs). It works on a sweep still running: jobs without summary.json are `incomplete` (running or
killed); a job whose files cannot be read is `corrupt`, with the file and the problem in `error`.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path
from typing import Dict, List

import pandas as pd
import yaml

from . import rundir as RD

# the summaries the figures draw by default, by preference (an experiment names its own: report.metrics)
METRICS = ["log10_risk_ratio", "min_pl_ratio", "lambda_min_tangent_init", "risk_test", "path_over_radius"]


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise RD.RunDirError(f"{path}: not readable YAML ({e})") from e


def job_dirs(sweep_dir: Path) -> List[Path]:
    """Directories holding .hydra/config.yaml, except vectorized jobs' own (their replicas are the jobs)."""
    dirs = {p.parent.parent for p in Path(sweep_dir).rglob(".hydra/config.yaml")}
    return sorted((d for d in dirs if not _is_replica_container(d)), key=_job_order)


def _is_replica_container(job: Path) -> bool:
    try:
        cfg = _read_yaml(job / RD.CONFIG_DIR / "config.yaml") or {}
    except RD.RunDirError:
        return False
    return isinstance(cfg, dict) and bool((cfg.get("sweep") or {}).get("replicas"))


def _job_order(p: Path):
    head = p.name.split("_", 1)[0]
    return (int(head), p.name) if head.isdigit() else (math.inf, p.name)


def _flatten(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def overrides(job: Path) -> Dict[str, str]:
    """The job's command-line values (key -> value string), from .hydra/overrides.yaml."""
    path = job / RD.CONFIG_DIR / "overrides.yaml"
    items = _read_yaml(path) if path.exists() else []
    if not isinstance(items, list):
        raise RD.RunDirError(f"{path}: a list of overrides was expected")
    out = {}
    for item in items:
        key, _, value = str(item).lstrip("+~").partition("=")
        if "/" not in key and key not in ("experiment", "debug", "tags") and not key.startswith("hydra"):
            out[key] = value
    return out


def parse_value(value: str):
    """An override's value as a number when it is one (so axes sort numerically)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _check_rows(job: Path, summary: dict) -> None:
    """A finished job's metrics.csv ends with the final particles' row (step = steps taken)."""
    steps = RD.read_table(job)["step"]
    if steps.empty or steps.iloc[-1] != summary.get("steps"):
        last = "no rows" if steps.empty else f"its last row is step {steps.iloc[-1]:g}"
        raise RD.RunDirError(f"{job / RD.METRICS}: {last}, the run finished at step {summary.get('steps')} "
                             "(truncated or replaced)")


def job_row(job: Path, sweep_dir: Path) -> Dict[str, object]:
    row: Dict[str, object] = {"job": str(job.relative_to(sweep_dir)), "path": str(job)}
    try:
        cfg = _read_yaml(job / RD.CONFIG_DIR / "config.yaml")
        if not isinstance(cfg, dict):
            raise RD.RunDirError(f"{job / RD.CONFIG_DIR / 'config.yaml'}: not a configuration mapping")
        row.update({f"cfg.{k}": v for k, v in _flatten(cfg).items() if not isinstance(v, list)})
        row.update({f"sweep.{k}": parse_value(v) for k, v in overrides(job).items()})
        s = RD.read_summary(job)
        if s is not None and s.get("status") in RD.FINISHED:
            _check_rows(job, s)
    except RD.RunDirError as e:
        row["status"], row["error"] = "corrupt", str(e)
        return row
    if s is None:
        row["status"] = "incomplete"  # running, or killed: only the absence of summary.json is known
        return row
    row["status"] = s["status"]
    if s["status"] == "failed":
        row["error"] = s.get("error")
        return row
    final = s["final"]
    row.update({k: v for k, v in final.items() if k != "step"})
    row.update({k: s.get(k) for k in ("steps", "risk_init", "min_pl_ratio", "wall_time_s", "diverged_at")})
    cert = s.get("certificate") or {}
    for key in ("kind", "c0", "certified_radius", "inside_certified_region", "guaranteed_factor", "observed_factor"):
        row[f"certificate_{key}" if key == "kind" else key] = cert.get(key)
    row["lambda_min_tangent_init"] = cert.get("lambda_min_tangent_init") if cert.get("resolved") else None
    layers = (s.get("lambda_min_feature_layers") or {}).get("init") or []
    row["lambda_min_feature_init"] = min(layers) if layers and None not in layers else None
    ri, rf = s.get("risk_init"), final.get("risk_train")
    if ri and rf is not None and ri > 0 and rf > 0:
        row["log10_risk_ratio"] = math.log10(rf / ri)
        row["reached_1e-3"] = rf <= 1e-3 * ri
    return row


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per job: status, every config value (`cfg.` prefix), swept values (`sweep.`), final metrics."""
    return pd.DataFrame([job_row(j, Path(sweep_dir)) for j in job_dirs(sweep_dir)])


def swept_keys(sweep_dir: Path) -> List[str]:
    """Config keys that take more than one value across the sweep's jobs, in the order they first appear."""
    values: Dict[str, list] = {}
    for j in job_dirs(sweep_dir):
        try:
            for k, v in overrides(j).items():
                values.setdefault(k, [])
                if v not in values[k]:
                    values[k].append(v)
        except RD.RunDirError:
            continue
    return [k for k, v in values.items() if len(v) > 1]


def sweep_progress(sweep_dir: Path) -> Dict[str, int]:
    """Counts for a sweep line: done (finished or diverged), failed (failed, corrupt), diverged, running
    (a job holding its run directory's lock)."""
    from .ownership import lock_holder

    df = collect(sweep_dir)
    st = df["status"] if not df.empty else pd.Series([], dtype=object)
    running = sum(1 for j in job_dirs(sweep_dir) if not (j / RD.SUMMARY).exists() and lock_holder(j) is not None)
    return {"done": int(st.isin(RD.FINISHED + ("diverged", "interrupted")).sum()),
            "failed": int(st.isin(("failed", "corrupt")).sum()), "diverged": int((st == "diverged").sum()),
            "running": running}


def count_statuses(sweep_dir: Path) -> str:
    """One line: how many jobs, finished, diverged, failed (and others), naming the bad ones."""
    df = collect(sweep_dir)
    if df.empty:
        return f"sweep {sweep_dir}: no jobs found"
    st = df["status"]
    line = (f"sweep {Path(sweep_dir).name}: {len(df)} jobs: {int(st.isin(RD.FINISHED).sum())} finished "
            f"({int((st == 'converged').sum())} converged), {int((st == 'diverged').sum())} diverged, "
            f"{int((st == 'failed').sum())} failed")
    other = df[~st.isin(RD.FINISHED + ("diverged", "failed"))]
    for status, group in other.groupby("status"):
        line += f", {len(group)} {status}"
    for label, statuses in (("failed", ("failed",)), ("corrupt", ("corrupt",)), ("incomplete", ("incomplete", "interrupted"))):
        names = df[st.isin(statuses)]["job"].tolist()
        if names:
            line += f" [{label}: {', '.join(names)}]"
    return line


def _atomic_frame(df: pd.DataFrame, path: Path, kind: str) -> None:
    from .atomic import atomic_write_bytes

    buf = io.BytesIO()
    if kind == "csv":
        buf.write(df.to_csv(index=False).encode())
    else:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def report_metrics(sweep_dir: Path) -> List[str]:
    """The metrics an experiment names for its figures (report.metrics of its jobs), else METRICS."""
    for j in job_dirs(sweep_dir):
        try:
            cfg = _read_yaml(j / RD.CONFIG_DIR / "config.yaml") or {}
        except RD.RunDirError:
            continue
        named = ((cfg.get("report") or {}).get("metrics") or []) if isinstance(cfg, dict) else []
        if named:
            return list(named)
    return METRICS


def report(sweep_dir: Path, out: Path = None, metrics: List[str] = None) -> Dict[str, object]:
    from .figures import sweep_figures
    from .threshold_report import SEARCH, threshold_report

    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir / "report"
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
