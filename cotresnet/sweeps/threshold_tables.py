"""A threshold search's tables in its sweep directory: the search's identity, every seed's outcome (a job
summary's verdict), every point's verdict and every combination's bracket with its threshold estimate. The
search (threshold_search.py) writes them after every round and reads them back, checked, to resume; the
report (cotresnet.report.threshold) reads them. Columns: threshold_search.py's module doc."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Tuple

import numpy as np
import pandas as pd

from ..rundir import contract as RD
from ..rundir.atomic import atomic_write_bytes

if TYPE_CHECKING:  # the search's statistics import scipy.stats (1 s): reading its tables needs none of it
    from .threshold import ThresholdSearch

SEARCH, OUTCOMES = "threshold_search.json", "threshold_outcomes.csv"
POINTS, BRACKETS = "threshold_points.csv", "threshold_brackets.csv"
BOUNDARY, SCALING = "threshold_boundary.csv", "threshold_scaling.csv"


def bracket_table(search: ThresholdSearch, level: float) -> pd.DataFrame:
    """brackets() with the grid's jobs and each converged combination's threshold `estimate` in
    [estimate_lo, estimate_hi] (ThresholdSearch.estimates: where the success fraction crosses the search's
    fraction, plateaus of seeds that never or always succeed taken out): the logistic fit's (logistic,
    logistic_lo, logistic_hi) where it is identified with a finite interval, else the final bracket's
    midpoint in u and the bracket itself (separable outcomes: every seed agrees at every point).
    `resolved` is true when the estimate lies in the final bracket with a finite interval: only such rows
    enter a scaling law; `note` says why a row is not (or what a reader must know: a plateau)."""
    b = search.brackets().merge(search.versus_grid()[["combination", "grid_jobs"]], on="combination")
    est = search.estimates(level).rename(columns={"threshold": "logistic", "lo": "logistic_lo", "hi": "logistic_hi"})
    b = b.merge(est, on="combination", how="left") if len(est) else b.assign(
        logistic=math.nan, logistic_lo=math.nan, logistic_hi=math.nan, slope=math.nan, separable=True, level=level,
        plateau_low=math.nan, plateau_high=math.nan, never="", always="", note="")
    b["note"] = b["note"].fillna("")
    fit = np.isfinite(b[["logistic", "logistic_lo", "logistic_hi"]].astype(float)).all(axis=1)
    mid = np.sqrt(b.lo * b.hi) if search.config.log else (b.lo + b.hi) / 2
    converged = (b.status == "converged") & (b["note"] == "")
    b["estimate"] = np.where(converged, np.where(fit, b.logistic, mid), math.nan)
    b["estimate_lo"] = np.where(converged, np.where(fit, b.logistic_lo, b.lo), math.nan)
    b["estimate_hi"] = np.where(converged, np.where(fit, b.logistic_hi, b.hi), math.nan)
    inside = (b.estimate >= b.lo) & (b.estimate <= b.hi)
    b["resolved"] = converged & inside & np.isfinite(b.estimate_lo) & np.isfinite(b.estimate_hi)
    for i, r in b.iterrows():
        notes = [r["note"]] if r["note"] else []
        if r.status != "converged":
            notes.append(f"the search ended {r.status}: no threshold")
        elif converged[i] and not inside[i]:
            notes.append(f"the fit's estimate {r.estimate:.4g} lies outside the final bracket [{r.lo:g}, {r.hi:g}]: "
                         "the seeds' outcomes are not monotone in the value")
        elif converged[i] and not b.at[i, "resolved"]:
            notes.append("the estimate's interval is unbounded: too few outcomes near the threshold")
        if r.get("never"):
            notes.append(f"seed(s) {r.never} never succeed (the fraction stays <= {r.plateau_high:.3g})")
        b.at[i, "note"] = "; ".join(notes)
    return b


def write_tables(sweep_dir: Path, search: ThresholdSearch, outcomes: pd.DataFrame, level: float) -> pd.DataFrame:
    """The outcomes, points and brackets tables (threshold_search.py, module doc) into the
    sweep directory, each written atomically; returns the brackets."""
    def put(name, df):
        atomic_write_bytes(Path(sweep_dir) / name, df.to_csv(index=False).encode())

    norm = outcomes.assign(value=outcomes.value.map(search.config.norm))
    jobs = norm.groupby(["combination", "value"]).job.agg(lambda j: " ".join(sorted(set(map(str, j))))).reset_index()
    brackets = bracket_table(search, level)
    put(OUTCOMES, outcomes)
    order = {c: i for i, c in enumerate(search.config.combinations)}  # the command's order, not the labels'
    points = search.points().merge(jobs, on=["combination", "value"], how="left").sort_values(
        ["combination", "value"], key=lambda col: col.map(order) if col.name == "combination" else col)
    put(POINTS, points)
    put(BRACKETS, brackets)
    return brackets


def read_tables(sweep_dir: Path):
    missing = [n for n in (SEARCH, BRACKETS, POINTS, OUTCOMES) if not (sweep_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{sweep_dir} holds no threshold search tables ({', '.join(missing)} missing)")
    search = json.loads((sweep_dir / SEARCH).read_text())
    tables = [pd.read_csv(sweep_dir / n, dtype={"combination": str}) for n in (BRACKETS, POINTS, OUTCOMES)]
    return search, *tables


def read_store(sweep_dir: Path, identity: dict, replicas: bool) -> pd.DataFrame:
    """The stored outcomes of this search (empty for a new one), checked: the directory holds a search of this
    configuration (threshold_search.json), the outcome table parses, and every row is the verdict of the job
    summary it came from (a hand-edited verdict would steer the search). A ConfigError names the file."""
    from ..errors import ConfigError

    path = Path(sweep_dir) / SEARCH
    if path.exists():
        try:
            old = RD.read_json(path)
        except RD.RunDirError as e:
            raise ConfigError(f"{e}; remove it, or choose another hydra.sweep.dir") from e
        diffs = [f"{part}: {old.get(part)!r} -> {identity[part]!r}" for part in ("key", "criterion")
                 if old.get(part) != identity[part]]
        a, b = old.get("task", {}), identity["task"]
        diffs += [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
                  if a.get(k) != b.get(k)]
        if diffs:
            raise ConfigError(f"hydra.sweep.dir={sweep_dir} holds a threshold search of another configuration "
                              f"({'; '.join(diffs[:4])}); choose another hydra.sweep.dir")
    table = Path(sweep_dir) / OUTCOMES
    if not table.exists():
        return pd.DataFrame()
    fix = f"remove {table} (and the job directories) to start the search again, or choose another hydra.sweep.dir"
    try:
        outcomes = pd.read_csv(table, dtype={"combination": str})
        missing = {"combination", "value", "seed", "success", "status", "job_num", "job"} - set(outcomes.columns)
        if missing:
            raise ValueError(f"columns {', '.join(sorted(missing))} are missing")
        outcomes = outcomes.astype({"value": float, "seed": int, "job_num": int, "job": str})
        if not outcomes.success.isin([True, False]).all():
            raise ValueError("'success' holds values that are not true or false")
    except (ValueError, TypeError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ConfigError(f"{table} is not a threshold search's outcome table ({str(e).splitlines()[0]}); {fix}") from e
    for i, o in enumerate(outcomes.itertuples(index=False)):
        job = Path(sweep_dir) / o.job / (f"seed={o.seed}" if replicas else "")
        try:
            summary = RD.read_summary(job)
        except RD.RunDirError as e:
            raise ConfigError(f"{table} row {i + 2} cannot be checked: {e}; {fix}") from e
        expected = verdict(summary, identity["criterion"])[0] if summary else False
        if bool(o.success) != expected or (summary and summary.get("status") != o.status):
            found = f"{summary.get('status')}, success {expected}" if summary else "no summary: a failure"
            raise ConfigError(f"{table} row {i + 2} ({o.combination}, value {o.value:g}, seed {o.seed}: "
                              f"{o.status}, success {bool(o.success)}) disagrees with {job} ({found}): the store "
                              f"is not its jobs' verdicts; {fix}")
    return outcomes


def load_outcomes(search: ThresholdSearch, outcomes: pd.DataFrame, sweep_dir: Path) -> None:
    """Replay the stored outcomes; a table the search cannot replay is a ConfigError naming it."""
    from ..errors import ConfigError

    try:
        search.load(outcomes)
    except ValueError as e:
        raise ConfigError(f"{Path(sweep_dir) / OUTCOMES} cannot be replayed ({e}); remove it to start the search "
                          "again, or choose another hydra.sweep.dir") from e


def verdict(summary: dict, criterion: dict) -> Tuple[bool, float]:
    """(success, metric) of one seed's summary (module doc, Verdicts)."""
    final = summary.get("final") or {}
    if criterion["metric"] == "risk_ratio":
        r0, r = summary.get("risk_init"), final.get("risk_train")
        value = r / r0 if isinstance(r0, (int, float)) and isinstance(r, (int, float)) and r0 > 0 else math.nan
    else:
        value = final.get(criterion["metric"], summary.get(criterion["metric"]))
        value = float(value) if isinstance(value, (int, float)) else math.nan
    holds = value <= criterion["value"] if criterion["op"] == "<=" else value >= criterion["value"]
    return bool(summary.get("status") in RD.FINISHED and math.isfinite(value) and holds), value
