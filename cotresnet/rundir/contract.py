"""The run directory contract (the README's "What a run leaves behind"): file names, metrics columns, the summary schema,
written and read here only. No Lightning: readers (report, diagnose, plots) stay cheap.

    .hydra/            config.yaml, overrides.yaml, hydra.yaml (written by the job once it owns the directory)
    identity.json      the fingerprint of the configuration that determines the trajectory
    metrics.csv        one row per logged step (COLUMNS)
    spectrum.csv       the residual's energy per decade of the tangent kernel's spectrum, at kernel steps
    depths.csv         depth-mobile particles only: the histogram of their depths at every row
    summary.json       status, final metrics, certificate, wall time, versions
    particles.pt       {"init": {u, w, b}, "final": {u, w, b}, "meta": {spec fields, embedding, readout, ...}}
    data.pt            {x_train, y_train, x_test, y_test, classification}, before embedding
    plots/             run.png: every panel of the run (run.pdf / run.svg on request)
    checkpoints/last.ckpt, train.log, traceback.txt (a failed job), .lock (held while a job runs)
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import RunDirError
from .atomic import atomic_torch_save, atomic_write_bytes, load_trusted

CONFIG_DIR, IDENTITY, METRICS, SPECTRUM, SUMMARY = ".hydra", "identity.json", "metrics.csv", "spectrum.csv", "summary.json"
# inside CONFIG_DIR: the composed configuration, the job's overrides, Hydra's own configuration
CONFIG_YAML, OVERRIDES_YAML, HYDRA_YAML = "config.yaml", "overrides.yaml", "hydra.yaml"
# a sweep directory's own files: Hydra's multirun.yaml, the sweep report's directory, what the sweep plans
MULTIRUN_YAML, REPORT, SWEEP_PLAN = "multirun.yaml", "report", "sweep_plan.json"
DEPTHS = "depths.csv"  # depth-mobile particles: the histogram of their depths at every row
PARTICLES, DATA, PLOTS, CHECKPOINT = "particles.pt", "data.pt", "plots", "checkpoints/last.ckpt"
LOG, TRACEBACK, LOCK = "train.log", "traceback.txt", ".lock"
# everything a run writes: what a restart or an overwrite removes first (the lock stays: it is held)
OUTPUTS = (CONFIG_DIR, IDENTITY, METRICS, SPECTRUM, DEPTHS, SUMMARY, PARTICLES, DATA, PLOTS, "checkpoints", LOG, TRACEBACK,
           "tensorboard", "wandb")

# the layout of checkpoints/last.ckpt's 'cotresnet' entry and of the flow record's state in it: a
# checkpoint of another format is refused by name rather than resumed wrongly
CHECKPOINT_FORMAT = 2

STATUSES = ("converged", "max_steps", "diverged", "interrupted", "failed")
FINISHED = ("converged", "max_steps")

# metrics.csv columns, in order (the README documents each)
COLUMNS = [
    "step", "flow_time", "risk_train", "risk_test", "accuracy_train", "accuracy_test",
    "grad_norm2", "pl_ratio", "risk_predicted",
    "lambda_min_tangent", "lambda_min_tangent_resolution", "lambda_max_tangent", "risk_probe", "pl_ratio_probe",
    "pl_lower_bound", "rate_over_bound", "residual_top_share",
    "lambda_min_feature", "lambda_min_feature_mean", "lambda_min_feature_resolution", "feature_layers_unresolved",
    "lambda_min_feature_accuracy", "lambda_min_feature_lower",
    "grad_norm2_u", "grad_norm2_u_lower",
    "cot_dist_init", "cot_dist_init_lower", "cot_dist_init_upper", "path_length",
    "path_over_radius", "lambda_ratio",
    "depth_w2_uniform", "depth_max_gap", "depth_effective_layers", "depth_path_length",
    "w2_dist_init", "w2_dist_init_lower", "w2_dist_init_upper",
    "cot_dist_init_rel_width",
    "kernel_movement", "linearization_distance", "feature_movement", "feature_movement_max",
]
SPECTRUM_COLUMNS = ["step", "flow_time", "decade", "eigenvalues", "residual_share"]
DEPTH_COLUMNS = ["step", "flow_time", "bin_lo", "bin_hi", "count"]
DEPTH_BINS = 20
# scalar summary.json entries a job may return to an optimizing sweeper (optimized_metric), besides COLUMNS
SUMMARY_METRICS = ("risk_init", "min_pl_ratio", "steps", "flow_time", "wall_time_s")


class CSVWriter:
    """An append-only CSV of fixed columns (metrics.csv, spectrum.csv). Rows are flushed one by one: a
    killed job loses at most the row being written, and a resumed one truncates to its checkpoint."""

    def __init__(self, path: Path, columns: List[str]):
        self.path, self.columns = Path(path), columns

    def start(self) -> None:
        if not self.path.exists():
            atomic_write_bytes(self.path, (",".join(self.columns) + "\n").encode())

    def append(self, row: Dict[str, Any]) -> None:
        self.start()
        cells = {k: _cell(k, v) for k, v in row.items() if k in self.columns}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(cells)

    def truncate_from(self, step: int) -> None:
        """Drop rows with step >= `step` (a resumed run writes them again), atomically."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) < step]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, out.getvalue().encode())


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if key == "step":
        return str(int(value))
    return repr(float(value)) if not isinstance(value, str) else value


def read_table(run_dir: Path, name: str = METRICS):
    """metrics.csv (or spectrum.csv) as a DataFrame; RunDirError naming the file when it is unreadable."""
    import pandas as pd

    path = Path(run_dir) / name
    if not path.is_file():
        raise RunDirError(f"{path}: missing")
    try:
        df = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not a CSV table ({e})") from e
    if df.empty and "step" in df.columns:
        return df
    if "step" not in df.columns or not pd.api.types.is_numeric_dtype(df["step"]):
        raise RunDirError(f"{path}: no numeric 'step' column (columns: {', '.join(map(str, df.columns))})")
    bad = [c for c in df.columns if c != "decade" and not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise RunDirError(f"{path}: non-numeric values in column(s) {', '.join(bad)}")
    return df


def flatten(node, prefix: str = "") -> Dict[str, Any]:
    """A nested dict as one flat dict with dotted keys ({"model": {"L": 4}} -> {"model.L": 4}); lists and
    other values are kept as they are. The one way configurations are recorded flat (identity, dashboards,
    the sweep table)."""
    out: Dict[str, Any] = {}
    for k, v in (node or {}).items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# a job directory's name (with its number) stays well within a filesystem's 255-byte component
NAME_BYTES = 160
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{7,}(?:[eE][+-]?\d+)?(?![\w.])")


def safe_dirname(text: str) -> str:
    """A job or replica directory's name for a string of overrides (`model.M=8,init.scale_u=0.30000000000000004`):
    floats of more than 7 decimals rounded to 6 significant digits, every character but letters, digits and
    . _ = , + - replaced by _ (no path separator or '..' component reaches the filesystem), cut to
    NAME_BYTES. A rounded, replaced or cut name ends with a hash of the full text, which keeps distinct
    overrides distinct (0.1234567 and 0.1234568 both round to 0.123457); the full overrides are in the run's
    .hydra/overrides.yaml."""
    rounded = _LONG_FLOAT.sub(lambda m: f"{float(m.group(0)):.6g}", text)
    safe = _UNSAFE.sub("_", rounded)
    if safe == text and len(safe.encode()) <= NAME_BYTES:
        return safe
    return f"{safe[:NAME_BYTES - 11]}_{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def config_path(run_dir: Path, name: str = CONFIG_YAML) -> Path:
    """A file of the run's .hydra/ directory (config.yaml by default)."""
    return Path(run_dir) / CONFIG_DIR / name


def remove_stale_temporaries(run_dir: Path) -> List[Path]:
    """Remove the temporary files of atomic writes (.<name>.<random>.tmp) that a killed job left in a run
    directory, its checkpoints and its plots; only the job holding the directory's lock may call this."""
    gone = []
    for where in (Path(run_dir), Path(run_dir) / "checkpoints", Path(run_dir) / PLOTS, Path(run_dir) / CONFIG_DIR):
        for p in where.glob(".*.tmp") if where.is_dir() else ():
            if p.is_file() and not p.is_symlink():
                p.unlink()
                gone.append(p)
    return gone


def finite_or_none(v):
    """JSON has no NaN/inf: non-finite numbers become null, recursively (summary.json parses everywhere)."""
    if isinstance(v, dict):
        return {k: finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [finite_or_none(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(finite_or_none(obj), indent=2, sort_keys=True, default=str) + "\n").encode())


def write_summary(run_dir: Path, summary: Dict[str, Any]) -> None:
    if summary.get("status") not in STATUSES:
        raise ValueError(f"summary status {summary.get('status')!r} is not one of {STATUSES}")
    write_json(Path(run_dir) / SUMMARY, summary)


def read_json(path: Path) -> Optional[dict]:
    """A JSON object file, None when absent; RunDirError when unreadable or not an object."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise RunDirError(f"{path}: a JSON object was expected, found {type(obj).__name__}")
    return obj


def read_summary(run_dir: Path) -> Optional[dict]:
    """summary.json (None when absent), checked: a known status and, for a finished run, its numbers."""
    path = Path(run_dir) / SUMMARY
    s = read_json(path)
    if s is None:
        return None
    if s.get("status") not in STATUSES:
        raise RunDirError(f"{path}: status {s.get('status')!r} is not one of {', '.join(STATUSES)}")
    if s["status"] != "failed":
        for key, kind in (("steps", int), ("final", dict), ("flow_time", (int, float))):
            if not isinstance(s.get(key), kind) or isinstance(s.get(key), bool):
                raise RunDirError(f"{path}: '{key}' is missing or not a {getattr(kind, '__name__', 'number')}")
        if not all(v is None or isinstance(v, (int, float)) for v in s["final"].values()):
            raise RunDirError(f"{path}: 'final' holds non-numeric values")
    return s


def save_particles(path: Path, init, final, meta: dict) -> None:
    """particles.pt: {"init": {u, w, b}, "final": {u, w, b}, "meta": {...}}, tensors on the CPU."""
    cpu = lambda p: {k: v.detach().cpu() for k, v in p.items()}
    atomic_torch_save({"init": cpu(init), "final": cpu(final), "meta": meta}, path)


def load_run_tensors(run_dir: Path) -> tuple:
    """(particles.pt, data.pt) of a run, loaded safely and checked for the keys and shapes readers use."""
    import torch

    out = []
    for name, keys in ((PARTICLES, ("init", "final", "meta")), (DATA, ("x_train", "y_train", "x_test", "y_test"))):
        path = Path(run_dir) / name
        if not path.is_file():
            raise RunDirError(f"{path}: missing")
        try:
            obj = load_trusted(path)
        except ValueError as e:
            raise RunDirError(str(e)) from e
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            raise RunDirError(f"{path}: expected a dict with {', '.join(keys)}")
        out.append(obj)
    particles, data = out
    for which in ("init", "final"):
        p = particles[which]
        if not (isinstance(p, dict) and all(isinstance(p.get(k), torch.Tensor) for k in "uwb")
                and p["u"].dim() == 3 and p["u"].shape == p["w"].shape and p["b"].shape == p["u"].shape[:2]):
            raise RunDirError(f"{Path(run_dir) / PARTICLES}: '{which}' is not {{u, w: (L, M, d), b: (L, M)}}")
    for k in ("x_train", "y_train", "x_test", "y_test"):
        if not (isinstance(data[k], torch.Tensor) and data[k].dim() == 2):
            raise RunDirError(f"{Path(run_dir) / DATA}: '{k}' is not a 2-D tensor")
    return particles, data


def write_sweep_plan(sweep_dir: Path, sweeper: str, runs: Optional[int], jobs: Optional[int],
                     bound: bool = False) -> None:
    """sweep_plan.json: what a sweep plans, in runs (one flow and one run directory each) and jobs (one launch
    each; a vectorized job trains several runs). `bound`: a search's count if its brackets hold (it may
    expand them and run more); None: the sweeper does not say."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(sweep_dir) / SWEEP_PLAN, {"sweeper": sweeper, "runs": runs, "jobs": jobs, "bound": bound})


def read_sweep_plan(sweep_dir: Path) -> Optional[Dict[str, Any]]:
    """The sweep's sweep_plan.json, or None (a sweep launched before plans were written, or not by us)."""
    try:
        return read_json(Path(sweep_dir) / SWEEP_PLAN)
    except RunDirError:
        return None
