"""Who owns a run directory: the identity of the configuration that determines its trajectory, the
lock held while a job runs in it, and what a new job does there (README, "Reruns, resume, signals").

The fingerprint covers what changes the trajectory's mathematics: model (not model.backprop, which
agrees to round-off), init, data (the keys of the data source and a hash of the data itself), optim,
seed and trainer.matmul_precision. Loggers, cadences, max_steps and the stop rule are not in it:
raising trainer.max_steps continues a run, lowering trainer.converge_ratio too.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from omegaconf import OmegaConf

from ..errors import ConfigError
from . import contract as RD

_SOURCE_KEYS = {"teacher": ("n_train", "n_test", "seed", "teacher"), "file": (),
                "diabetes": ("test_fraction", "seed"), "digits": ("test_fraction", "seed"),
                "wine": ("test_fraction", "seed"), "breast_cancer": ("test_fraction", "seed")}
_INTEGRATOR_KEYS = {"euler": (), "rk4": ("substeps", "adjoint"), "dopri5": ("rtol", "atol", "adjoint")}


def identity(cfg, data_sha256: str, kernel_samples: int) -> dict:
    """{"fingerprint": sha256, "config": {dotted key: value}} of the trajectory-defining configuration, and of
    the kernel samples its certificate is computed on (a continuation on other samples would compare
    lambda_min(K(mu_t)) against a lambda_0 of another set)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    model = {k: v for k, v in c["model"].items()
             if k not in ("backprop", "substeps", "rtol", "atol", "adjoint", "bandwidth")
             or k in _INTEGRATOR_KEYS[c["model"]["integrator"]] or (k == "bandwidth" and c["model"]["depth_kernel"])}
    if c["model"]["depth_kernel"] and c["model"]["integrator"] == "euler":
        model["substeps"] = c["model"]["substeps"]  # depth-mobile Euler takes L x substeps steps
    optim = {k: v for k, v in c["optim"].items() if k != "depth_weight" or c["optim"]["geometry"] == "wasserstein"}
    data = {"name": c["data"]["name"], **{k: c["data"][k] for k in _SOURCE_KEYS[c["data"]["name"]]}}
    values = {**RD.flatten(model, "model."), **RD.flatten(c["init"], "init."), **RD.flatten(data, "data."),
              **RD.flatten(optim, "optim."),
              "seed": c["seed"], "trainer.matmul_precision": c["trainer"]["matmul_precision"], "data.sha256": data_sha256,
              "callbacks.n_probe": kernel_samples}  # the effective count: null and N are the same samples
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    return {"fingerprint": digest, "config": values}


def job_identity(members: List[dict]) -> dict:
    """A vectorized job's identity: its replicas' identities, in order."""
    digest = hashlib.sha256("".join(m["fingerprint"] for m in members).encode()).hexdigest()
    return {"fingerprint": digest, "config": {"sweep.replicas": [m["config"] for m in members]}}


def differences(old: dict, new: dict) -> List[str]:
    """'key: old -> new' for every fingerprinted key whose value differs; a vectorized job's replicas are
    compared one by one ("sweep.replicas[2]: seed: 2 -> 3"), never dumped whole."""
    a, b = old.get("config", {}), new["config"]
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k, "<absent>"), b.get(k, "<absent>")
        if x == y:
            continue
        if k == "sweep.replicas" and isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                out.append(f"sweep.replicas: {len(x)} replicas -> {len(y)}")
            out += [f"sweep.replicas[{i}]: {d}" for i, (p, q) in enumerate(zip(x, y))
                    for d in differences({"config": p}, {"config": q})]
        else:
            out.append(f"{k}: {x!r} -> {y!r}")
    return out


# The run locks this process holds. A POSIX lock belongs to the process: closing any descriptor of the file
# drops it, and F_GETLK never reports the process's own lock, so this process asks here, never opening a lock
# file it holds (a sweep's monitor thread checks its jobs' locks while they train in this process).
_HELD: Dict[Path, RunLock] = {}


class RunLock:
    """An exclusive POSIX lock on <run dir>/.lock for the job's life. The file stays empty (a rerun that
    finds the run done changes no byte); a second job learns the holder's pid from F_GETLK."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RD.LOCK
        self.fd: Optional[int] = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.resolve() in _HELD:
            raise ConfigError(f"run directory {self.path.parent} is in use by this process ({os.getpid()}) "
                              "(one job per run directory); choose another hydra.run.dir")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = self.holder(fd) if e.errno in (errno.EACCES, errno.EAGAIN) else None
            os.close(fd)
            raise ConfigError(f"run directory {self.path.parent} is in use by process {holder} "
                              "(one job per run directory); wait for it or choose another hydra.run.dir") from e
        self.fd = fd
        _HELD[self.path.resolve()] = self
        return self

    @staticmethod
    def holder(fd: int) -> Optional[int]:
        query = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)
        l_type, _, _, _, pid = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))
        return pid if l_type != fcntl.F_UNLCK else None

    def release(self) -> None:
        if self.fd is not None:
            _HELD.pop(self.path.resolve(), None)
            os.close(self.fd)  # closing drops the POSIX lock
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


@dataclass
class Plan:
    """What a job does in its run directory: `new` (nothing there), `restart` (the same run from step 0,
    its old outputs removed first), `resume` (from `checkpoint`), `done` (every file stays as it is)."""

    action: str
    checkpoint: Optional[Path] = None
    clear: List[Path] = field(default_factory=list)
    reason: str = ""


def _outputs(run_dir: Path) -> List[str]:
    return [name for name in RD.OUTPUTS if (run_dir / name).exists()]


def _stopped_before_identity(dirs: List[Path]) -> bool:
    """Only what a job that stopped before its identity leaves: train.log, traceback.txt and a summary saying
    it failed or was interrupted at step 0."""
    for d in dirs:
        names = set(_outputs(d))
        if not names <= {RD.LOG, RD.TRACEBACK, RD.SUMMARY}:
            return False
        if RD.SUMMARY in names:
            try:
                s = RD.read_json(d / RD.SUMMARY)
            except RD.RunDirError:
                return False
            if s.get("status") not in ("failed", "interrupted") or s.get("steps", 0):
                return False
    return True


def _satisfied(summary: Optional[dict], cfg) -> bool:
    """A finished run whose stop rule also holds under this configuration's max_steps and converge_ratio."""
    if not summary or summary.get("status") not in ("converged", "max_steps", "diverged"):
        return False
    if summary["status"] == "diverged" or summary.get("steps", 0) >= cfg.trainer.max_steps:
        return True
    risk, risk0, ratio = (summary.get("final") or {}).get("risk_train"), summary.get("risk_init"), cfg.trainer.converge_ratio
    return summary["status"] == "converged" and ratio > 0 and None not in (risk, risk0) and risk <= ratio * risk0


def plan(cfg, job_dir: Path, ident: dict, member_dirs: List[Path]) -> Plan:
    """Decide what a job with identity `ident` does in `job_dir` (its replicas in `member_dirs`; a single
    run is its own member). Raises ConfigError, touching nothing, when the directory holds another run."""
    job_dir = Path(job_dir)
    dirs = [job_dir] + [d for d in member_dirs if d != job_dir]
    occupied = sorted({f"{d.name}/{n}" if d != job_dir else n for d in dirs for n in _outputs(d)})
    unreadable = None
    try:
        old = RD.read_json(job_dir / RD.IDENTITY)
    except RD.RunDirError as e:
        old, unreadable = None, str(e)
    clear = [d / n for d in dirs for n in _outputs(d)]
    if old is None and unreadable is None and (job_dir / RD.LOCK).exists() and occupied \
            and _stopped_before_identity(dirs):
        # our lock, log and stop record alone: a job stopped (signal, crash) before it wrote its identity (a lock
        # alone is this job's own, taken a moment ago: the run is new)
        return Plan("restart", clear=clear, reason="the previous job stopped before it wrote its identity")
    if occupied and (old is None or old.get("fingerprint") != ident["fingerprint"]):
        if cfg.overwrite:
            return Plan("restart", clear=clear, reason="overwrite=true: the previous run's files go first")
        what = ("a run of another configuration: " + "; ".join(differences(old, ident)) if old
                else f"a run whose identity is unreadable ({unreadable})" if unreadable
                else f"files of no cotresnet run ({', '.join(occupied[:6])})")
        raise ConfigError(f"run directory {job_dir} holds {what}. Choose another directory (hydra.run.dir / "
                          "hydra.sweep.dir) or set overwrite=true to replace it")
    p = _same_run(cfg, job_dir, member_dirs, clear) if occupied else Plan("new")
    if cfg.resume not in ("auto", "never") and p.action != "done":
        p.checkpoint = Path(cfg.resume)
    return p


def _same_run(cfg, job_dir: Path, member_dirs: List[Path], clear: List[Path]) -> Plan:
    if cfg.resume == "never":
        return Plan("restart", clear=clear, reason="resume=never")
    if cfg.resume != "auto":
        return Plan("restart", clear=clear, reason=f"resume={cfg.resume}")
    summaries = [RD.read_summary(d) for d in member_dirs]
    if all(_satisfied(s, cfg) for s in summaries):
        return Plan("done", reason="finished with this configuration")
    ckpt = job_dir / RD.CHECKPOINT
    if ckpt.is_file():
        return Plan("resume", checkpoint=ckpt)
    return Plan("restart", clear=clear, reason="no checkpoint: the same run starts again from step 0")


def _new_jobs(job_dirs: List[Path]):
    """(job directory, its number, its overrides' part, the numbered job directories beside it by name) of
    each job not yet on disk: directories are <num>_<overrides>, the number following the order of the values."""
    listings: Dict[Path, Dict[str, Path]] = {}
    for job_dir in job_dirs:
        num, _, rest = job_dir.name.partition("_")
        if job_dir.exists() or not num.isdigit() or not job_dir.parent.is_dir():
            continue
        if job_dir.parent not in listings:
            listings[job_dir.parent] = {p.name: p for p in job_dir.parent.iterdir()
                                        if p.is_dir() and p.name.partition("_")[0].isdigit()}
        yield job_dir, num, rest, listings[job_dir.parent]


def renumbered(job_dirs: List[Path]) -> List[tuple]:
    """(new job directory, existing directory) pairs naming the same job under another number."""
    return [(job_dir, p) for job_dir, _, rest, listing in _new_jobs(job_dirs)
            for name, p in listing.items() if name.partition("_")[2] == rest]


def taken_numbers(job_dirs: List[Path]) -> List[tuple]:
    """(new job directory, existing directory) pairs where a job's number is taken by a job of other
    overrides: another sweep ran in this sweep directory (its job 0 is not this sweep's job 0)."""
    return [(job_dir, p) for job_dir, num, _, listing in _new_jobs(job_dirs)
            for name, p in listing.items() if name.partition("_")[0] == num]


def clear_outputs(paths: List[Path]) -> None:
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def data_digest(tensors: Dict[str, object]) -> str:
    """sha256 of a dataset's tensors (float64 bytes) and its classification flag."""
    h = hashlib.sha256()
    for k in ("x_train", "y_train", "x_test", "y_test"):
        t = tensors[k].double().contiguous()
        h.update(f"{k}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    h.update(str(bool(tensors.get("classification"))).encode())
    return h.hexdigest()


def lock_holder(run_dir: Path) -> Optional[int]:
    """The pid of the job holding a run directory's lock, or None (read-only: no lock file is created)."""
    path = Path(run_dir) / RD.LOCK
    if path.resolve() in _HELD:
        return os.getpid()
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        return RunLock.holder(fd)
    finally:
        os.close(fd)
