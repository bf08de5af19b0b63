"""A sweep directory as one table: every job with its status, configuration, swept values and final
metrics, and the counts a sweep line shows.

A run is one flow with its run directory: any directory below SWEEP_DIR holding `.hydra/config.yaml`, except a
vectorized job's own (its replicas are its runs); a job is one launch (column `job_dir`), which trains one run
or, vectorized, several. Every count a sweep line shows is in runs. It works on a sweep still running: runs
without summary.json are `incomplete` (running or killed); a run whose files cannot be read is `corrupt`, with
the file and the problem in `error`. (The column `job` names the run, relative to the sweep directory.)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd
import yaml

from ..rundir import contract as RD

# the summaries the figures draw by default, by preference (an experiment names its own: report.metrics)
METRICS = ["log10_risk_ratio", "min_pl_ratio", "lambda_min_tangent_init", "risk_test", "path_over_radius"]


def read_yaml(path: Path):
    try:
        # libyaml's loader where PyYAML has it: a sweep report reads every job's config (0.01 s each in Python)
        return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise RD.RunDirError(f"{path}: not readable YAML ({e})") from e


def run_dirs(sweep_dir: Path) -> List[Path]:
    """Directories holding .hydra/config.yaml, except vectorized jobs' own (their replicas are the runs)."""
    dirs = {p.parent.parent for p in Path(sweep_dir).rglob(f"{RD.CONFIG_DIR}/{RD.CONFIG_YAML}")}
    return sorted((d for d in dirs if not _is_replica_container(d)), key=_job_order)


def holds_runs(directory: Path) -> bool:
    """Whether a directory holds run directories other than itself: a sweep, or a vectorized job's directory
    (its replicas are the runs), as against one run."""
    here = Path(directory).resolve()
    return any(d.resolve() != here for d in run_dirs(directory))


def _is_replica_container(job: Path) -> bool:
    try:
        cfg = read_yaml(RD.config_path(job)) or {}
    except RD.RunDirError:
        return False
    return isinstance(cfg, dict) and bool((cfg.get("sweep") or {}).get("replicas"))


def _job_order(p: Path):
    head = p.name.split("_", 1)[0]
    return (int(head), p.name) if head.isdigit() else (math.inf, p.name)


def overrides(job: Path) -> Dict[str, str]:
    """The job's command-line values (key -> value string), from .hydra/overrides.yaml."""
    path = RD.config_path(job, RD.OVERRIDES_YAML)
    items = read_yaml(path) if path.exists() else []
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
    owner = job.parent  # a replica's job: the directory above holding the job's identity
    launch = owner if owner != Path(sweep_dir) and ((owner / RD.IDENTITY).exists() or (owner / RD.CONFIG_DIR).is_dir()) \
        else job
    row: Dict[str, object] = {"job": str(job.relative_to(sweep_dir)), "path": str(job),
                              "job_dir": str(launch.relative_to(sweep_dir))}
    try:
        cfg = read_yaml(RD.config_path(job))
        if not isinstance(cfg, dict):
            raise RD.RunDirError(f"{RD.config_path(job)}: not a configuration mapping")
        row.update({f"cfg.{k}": v for k, v in RD.flatten(cfg).items() if not isinstance(v, list)})
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
    if cert:  # whether the certificate is a theorem for this run, or what it lacks
        fails = [k.replace("_", " ") for k, ok in (cert.get("conditions") or {}).items() if not ok]
        row["theorem"] = "no: " + ", ".join(fails) if fails else "yes"
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
    return pd.DataFrame([job_row(j, Path(sweep_dir)) for j in run_dirs(sweep_dir)])


def swept_keys(sweep_dir: Path) -> List[str]:
    """Config keys that take more than one value across the sweep's jobs, in the order they first appear."""
    values: Dict[str, list] = {}
    for j in run_dirs(sweep_dir):
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
    (a job holding its run directory's lock, an interrupted one resumed included)."""
    from ..rundir.ownership import lock_holder

    df = collect(sweep_dir)
    st = df["status"] if not df.empty else pd.Series([], dtype=object)
    done = st.isin(RD.FINISHED + ("diverged",))
    ended = {Path(p).resolve() for p in df["path"][done | st.isin(("failed", "corrupt"))]} if not df.empty else set()
    running = sum(1 for j in run_dirs(sweep_dir) if j.resolve() not in ended and lock_holder(j) is not None)
    return {"done": int(done.sum()),
            "failed": int(st.isin(("failed", "corrupt")).sum()), "diverged": int((st == "diverged").sum()),
            "running": running}


def count_text(n: int, noun: str) -> str:
    """`1 run`, `2 runs`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def count_statuses(sweep_dir: Path, df: Optional[pd.DataFrame] = None) -> str:
    """One line: how many runs (in how many jobs, where vectorized jobs train several), finished, diverged,
    failed (and others), naming the bad ones. `df`: the sweep's table when it is already collected."""
    df = collect(sweep_dir) if df is None else df
    if df.empty:
        return f"sweep {sweep_dir}: no runs found"
    st, jobs = df["status"], df["job_dir"].nunique()
    in_jobs = f" in {count_text(jobs, 'job')}" if jobs != len(df) else ""
    line = (f"sweep {Path(sweep_dir).name}: {count_text(len(df), 'run')}{in_jobs}: {int(st.isin(RD.FINISHED).sum())} finished "
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
