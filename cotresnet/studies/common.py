"""What every study shares: its verdict and the files it writes, jobs through the public API (seeds as replicas of
one job per size), the networks and data of a configuration, and a plain gradient-descent loop for what a job cannot
express (a perturbed start, every step's particles), checked against run_job's trajectory in the tests.

A study writes `<out>/<name>/`: figure.png (+ .pdf when asked), verdict.json, table.csv (the raw measurements) and
runs/ (its jobs), and prints one line (Verdict.line).
"""
from __future__ import annotations

import io
import itertools
import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..rundir.atomic import atomic_write_bytes

# what every study job shares: no figures, no diagnostics it does not read, a fixed step budget, one thread
BASE = ["plots=[]", "trainer.progress=none", "callbacks.kernel_every=0", "callbacks.ot_every=0",
        "trainer.converge_ratio=0", "trainer.threads=1"]


@dataclass
class Verdict:
    """A study's answer. `claim`: the form tested, stated exactly; `quantity` = value [lo, hi] at `level` is what was
    measured; `claimed` the claimed form in a few symbols; `passed`: PASS or FAIL against it; `answer`: the finding
    in words (an open question's answer); `note`: what qualifies it (why a FAIL, pre-asymptotic sizes)."""

    name: str
    source: str
    claim: str
    quantity: str
    value: float
    lo: float
    hi: float
    claimed: str
    passed: bool
    answer: str = ""
    note: str = ""
    sizes: Dict[str, object] = field(default_factory=dict)
    seeds: int = 0
    level: float = 0.95
    runtime_s: float = 0.0
    details: Dict[str, object] = field(default_factory=dict)

    @property
    def word(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def line(self) -> str:
        value, lo, hi = _digits(self.value, self.lo, self.hi)
        return (f"{self.name}: {self.quantity} = {value} [{lo}, {hi}] ({self.level:.0%}) "
                f"vs claimed {self.claimed}: {self.word} ({self.runtime_s:.0f} s)")

    def as_dict(self) -> dict:
        return {**asdict(self), "verdict": self.word, "line": self.line()}


def _digits(*values: float) -> tuple:
    """The values with 4 significant digits, or as many more as keep different values apart (up to 10)."""
    for digits in range(4, 11):
        out = tuple(f"{v:.{digits}g}" if math.isfinite(v) else str(v) for v in values)
        if len(set(out)) == len(set(values)):
            return out
    return out


def write_outputs(where: Path, verdict: Verdict, table, fig, formats: Sequence[str] = ("png",)) -> None:
    """verdict.json, table.csv (a DataFrame) and figure.<format> in `where`, each written atomically."""
    from ..report.style import save_figure

    where.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(where / "verdict.json", json.dumps(verdict.as_dict(), indent=2, default=float).encode())
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    atomic_write_bytes(where / "table.csv", buf.getvalue().encode())
    save_figure(fig, where / "figure", formats)


def fresh_runs(where: Path) -> Path:
    """`where`/runs, emptied: a study measures its own jobs, never an earlier run of other sizes."""
    runs = where / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    return runs


def replica_list(**axes: Sequence) -> List[str]:
    """'k=v k=v' for every combination of the axes' values: replica_list(seed=[0, 1], **{"optim.dt": [0.1]})."""
    keys = list(axes)
    return [" ".join(f"{k}={v}" for k, v in zip(keys, values)) for values in itertools.product(*axes.values())]


def replicas_override(replicas: Sequence[str]) -> str:
    return "sweep.replicas=[" + ",".join(f"'{r}'" for r in replicas) + "]"


def with_base(overrides: Sequence[str]) -> List[str]:
    """BASE, then the overrides; an override of a BASE key replaces it (Hydra refuses a key given twice)."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [*(b for b in BASE if b.split("=", 1)[0] not in keys), *overrides]


def run_replicas(run_dir: Path, overrides: Sequence[str], replicas: Sequence[str]) -> List[dict]:
    """One job (cotresnet.run_job) of BASE + overrides whose members are the replicas; their summaries, in order.
    Each member's run directory is summary["run_dir"] (read it back with cotresnet.load_run)."""
    from ..api import run_job
    from ..config.compose import compose_config

    cfg = compose_config([*with_base(overrides), replicas_override(replicas)])
    return run_job(cfg, run_dir)


def config_networks(overrides: Sequence[str], replicas: Sequence[str], dtype: str = "float64"):
    """The initial networks a job of BASE + overrides would train, one per replica, and its dataset (float64):
    the same functions the job builds them with (model.build.student_network, data.load_dataset)."""
    from ..config.compose import compose_config
    from ..config.replicas import replica_config
    from ..data import load_dataset
    from ..model.build import student_network

    cfg = compose_config(with_base([*overrides, f"model.dtype={dtype}"]))
    members = [replica_config(cfg, r) for r in replicas]
    data = load_dataset(cfg.data)
    for m in members:
        if m.data != cfg.data:
            raise ValueError("config_networks: replicas must share the data")
    return [student_network(m, data.d_in, data.d_out) for m in members], data


def stacked(nets):
    """A ReplicatedResNet of networks of one spec: u, w: (R, L, M, d), b: (R, L, M)."""
    from ..model.replicas import ReplicatedResNet

    return ReplicatedResNet(nets)


def gradient_descent(nets, x: torch.Tensor, y: torch.Tensor, dt: Sequence[float], steps: int,
                     parameterization: str = "mean_field",
                     observe: Optional[Callable[[int, object], None]] = None):
    """The flow's steps for R networks at once, as the job takes them: theta -= lr_r dRisk_r/dtheta with
    lr_r = dt_r L M (mean_field) or dt_r (standard), full batch. x: (N, d_in), y: (N, d_out) shared by all.
    `observe(k, net)` sees the ReplicatedResNet before step k (k = 0..steps). Returns the ReplicatedResNet."""
    from ..record import learning_rate

    net = stacked(nets)
    R = net.R
    lr = torch.tensor([learning_rate(v, net.L, net.M, parameterization) for v in dt], dtype=net.u.dtype)
    xr, yr = x.to(net.u.dtype).expand(R, *x.shape), y.to(net.u.dtype).expand(R, *y.shape)
    params = [net.u, net.w, net.b]
    for k in range(steps + 1):
        if observe is not None:
            observe(k, net)
        if k == steps:
            break
        grads = torch.autograd.grad(net.risks(xr, yr).sum(), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= lr.view(-1, *[1] * (p.dim() - 1)) * g
    return net


def flat_particles(net) -> torch.Tensor:
    """theta of every replica flattened: (R, L M (2 d + 1))."""
    R = net.u.shape[0]
    return torch.cat([net.u.detach().reshape(R, -1), net.w.detach().reshape(R, -1), net.b.detach().reshape(R, -1)], 1)
