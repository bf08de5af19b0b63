"""The run directory (design.md section 6): atomic writes, metrics.csv, summary.json, particles.pt."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, Optional

import torch
from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment

from .atomic import atomic_torch_save, atomic_write_bytes

# metrics.csv columns, in order (the README documents each)
COLUMNS = [
    "step", "flow_time", "risk_train", "risk_test", "accuracy_train", "accuracy_test",
    "grad_norm2", "pl_ratio", "risk_predicted",
    "lambda_min_tangent", "risk_probe", "pl_ratio_probe", "pl_lower_bound",
    "lambda_min_feature", "lambda_min_feature_mean", "grad_norm2_u", "grad_norm2_u_lower",
    "cot_dist_init", "cot_dist_init_lower", "cot_dist_init_upper", "path_length",
    "path_over_radius", "lambda_ratio",
]


class MetricsCSV(Logger):
    """Lightning logger writing the run directory's metrics.csv: one row per logged step, fixed columns.

    Always active: the contract file exists whatever dashboards are chosen.
    """

    def __init__(self, run_dir: Path):
        super().__init__()
        self.path = Path(run_dir) / "metrics.csv"
        self.last: Dict[str, float] = {}  # latest value of every column logged so far

    @property
    def name(self) -> str:
        return "metrics_csv"

    @property
    def version(self) -> str:
        return ""

    @property
    @rank_zero_experiment
    def experiment(self):
        return None

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def truncate_from(self, step: int) -> None:
        """Drop rows with step >= `step` (a resumed run rewrites them), atomically."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) < step]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, out.getvalue().encode())
        for r in rows:
            self.last.update({k: float(v) for k, v in r.items() if v not in ("", None)})

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        row = {k: metrics[k] for k in COLUMNS if k in metrics}
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow({k: str(int(v)) if k == "step" else repr(float(v)) for k, v in row.items()})
        self.last.update(row)


def read_metrics(run_dir: Path):
    import pandas as pd

    return pd.read_csv(Path(run_dir) / "metrics.csv")


def save_particles(path: Path, init: Dict[str, torch.Tensor], final: Dict[str, torch.Tensor], meta: dict) -> None:
    """particles.pt: {"init": {u, w, b}, "final": {u, w, b}, "meta": {...}}, tensors on the CPU."""
    cpu = lambda p: {k: v.detach().cpu() for k, v in p.items()}
    atomic_torch_save({"init": cpu(init), "final": cpu(final), "meta": meta}, path)
