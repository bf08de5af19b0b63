"""Every check that runs before a job writes anything: the configuration (validate.py), the data, the
device, the run directory's owner and any checkpoint to resume from. A refusal is a ConfigError whose
message names the field and what is allowed."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..config.derived import kernel_samples
from ..config.validate import validate, validate_against_data
from ..errors import ConfigError
from ..rundir.contract import CHECKPOINT_FORMAT


def check_device(cfg) -> None:
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={t.accelerator} but no CUDA device is visible "
                              "(torch.cuda.is_available() is False); use trainer=cpu")
        if t.devices > torch.cuda.device_count():
            raise ConfigError(f"trainer.devices={t.devices} ranks of one GPU each, but this node has "
                              f"{torch.cuda.device_count()} GPUs; it must be <= {torch.cuda.device_count()}")
    check_ranks(cfg)


def check_ranks(cfg) -> None:
    """The ranks of trainer.devices x trainer.num_nodes can be had: as many as torchrun or SLURM started, or
    started here on one node, with at most one CPU rank per core unless trainer.oversubscribe."""
    from .ranks import launched_ranks

    t = cfg.trainer
    ranks, launched = t.devices * t.num_nodes, launched_ranks()
    how = "set trainer.devices to the ranks per node and trainer.num_nodes to the nodes"
    if launched is not None and launched.world != ranks:
        raise ConfigError(f"trainer.devices x trainer.num_nodes = {ranks} ranks, but {launched.launcher} started "
                          f"{launched.world}; {how}")
    if launched is None and t.num_nodes > 1:
        raise ConfigError(f"trainer.num_nodes={t.num_nodes} needs ranks on every node: launch with torchrun "
                          "(--nnodes) or SLURM (hydra/launcher=slurm), or set trainer.num_nodes=1")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if t.accelerator == "cpu" and t.devices > cores and not t.oversubscribe:
        raise ConfigError(f"trainer.devices={t.devices} CPU ranks on a node of {cores} cores (they would spin "
                          f"against each other); it must be <= {cores}, or set trainer.oversubscribe=true")


def check_config(cfg, datasets: Optional[dict] = None):
    """Every check of one configuration that needs no run directory; returns its (float64) dataset.
    `datasets`: those already loaded by data configuration (the replicas of a job mostly share one)."""
    import json

    import torch
    from omegaconf import OmegaConf

    from ..data import load_dataset

    validate(cfg)
    check_memory(cfg, cfg.data.n_train if cfg.data.name == "teacher" else 0)
    key = json.dumps([OmegaConf.to_container(cfg.data, resolve=True), cfg.model.dtype], sort_keys=True)
    if datasets is None or key not in datasets:
        loaded = load_dataset(cfg.data, getattr(torch, cfg.model.dtype))
        if datasets is None:
            datasets = {}
        datasets[key] = (loaded, _digest(loaded))
    dataset = datasets[key][0]
    validate_against_data(cfg, dataset.d_in, dataset.d_out, dataset.n_train)
    check_kernel_memory(cfg, dataset.n_train, dataset.d_out)
    check_device(cfg)
    return dataset


def _digest(dataset) -> str:
    from ..rundir.ownership import data_digest

    return data_digest(dataset.tensors())


def available_memory() -> int:
    """Bytes the kernel reports available (MemAvailable), or the physical memory where it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg, n_train: int) -> None:
    """Refuse sizes whose training alone cannot fit in this machine's memory, before anything is made: the
    particles with their gradients, initial and checkpoint copies (4 (2d + 1) L M numbers), the activations
    model.backprop keeps (fused: L N M; recompute: N M; autograd: 2 L N M), and a teacher's data. On a GPU
    the activations are the device's (check_device sees it); the host still holds the particles."""
    m = cfg.model
    size = 8 if m.dtype == "float64" else 4
    particles = 4 * (2 * m.d + 1) * m.L * m.M * size
    per_layer = {"fused": m.L * n_train * m.M, "recompute": n_train * m.M, "autograd": 2 * m.L * n_train * m.M}
    activations = 0 if cfg.trainer.accelerator == "gpu" else (per_layer[m.backprop] + m.L * n_train * m.d) * size
    data = 2 * n_train * (m.d + 1) * 8
    need, have = particles + activations + data, available_memory()
    if need > have:
        raise ConfigError(f"model.L={m.L}, model.M={m.M}, model.d={m.d}, data.n_train={n_train} need about "
                          f"{need / 2**30:.3g} GiB (particles {particles / 2**30:.3g}, activations of "
                          f"model.backprop={m.backprop} {activations / 2**30:.3g}), more than the "
                          f"{have / 2**30:.3g} GiB available; lower them (or model.backprop=recompute)")


def check_kernel_memory(cfg, n_train: int, d_out: int) -> None:
    """callbacks.kernel_memory_mb must hold the tangent kernel and as much again for the blocks that build
    it (fewer blocks, fewer passes over the particles). Only the Euler ResNet's kernels are built in blocks."""
    from ..diagnostics.kernels import kernel_bytes

    m = cfg.model
    if cfg.callbacks.kernel_every == 0 or m.integrator != "euler" or m.adjoint or m.depth_kernel is not None:
        return
    n = kernel_samples(cfg.callbacks, n_train, d_out)
    need = -(-2 * kernel_bytes(n, d_out) // 2**20)
    if cfg.callbacks.kernel_memory_mb < need:
        raise ConfigError(f"callbacks.kernel_memory_mb={cfg.callbacks.kernel_memory_mb} cannot hold the tangent "
                          f"kernel of {n * d_out} rows ({n} samples x d_out {d_out}); it must be >= {need}, or "
                          "lower callbacks.n_probe or callbacks.kernel_max_dim")


@dataclass
class Member:
    """One trained network of a job: its configuration, dataset, run directory and identity."""

    cfg: object
    dataset: object
    run_dir: Path
    identity: dict
    replica: Optional[str] = None


@dataclass
class JobCheck:
    """A checked job: its members (one, or the replicas of a vectorized job), identity and plan."""

    cfg: object
    run_dir: Path
    members: List[Member]
    identity: dict
    plan: object
    # the checkpoint the plan resumes from, loaded once (memory-mapped) and handed to Lightning, with the
    # file's (inode, size, mtime) when it was loaded: a replan under the lock reloads only a changed file
    checkpoint: Optional[dict] = None
    checkpoint_stamp: Optional[tuple] = None

    @property
    def checkpoint_info(self) -> Optional[dict]:
        """The checkpoint's 'cotresnet' entry (step, RNG states, wandb ids), None without a checkpoint."""
        return None if self.checkpoint is None else self.checkpoint["cotresnet"]


def check_job(cfg, run_dir: Path) -> JobCheck:
    """Every check of a job in `run_dir`, leaving nothing behind: config, data, device, that the directory
    can be made, its owner (ownership.plan) and the checkpoint it would resume from."""
    from ..config.derived import flow_time_steps
    from ..config.replicas import replica_config, replica_dirname
    from ..rundir import ownership as O

    run_dir = Path(run_dir).absolute()
    validate(cfg)
    cfg.trainer.max_steps = flow_time_steps(cfg)  # trainer.flow_time's budget: every reader sees the steps
    check_creatable(run_dir)
    members, datasets = [], {}
    for replica in cfg.sweep.replicas or [None]:
        rc = replica_config(cfg, replica) if replica else cfg
        ds = check_config(rc, datasets)
        digest = next(d for loaded, d in datasets.values() if loaded is ds)
        rd = run_dir / replica_dirname(replica) if replica else run_dir
        members.append(Member(rc, ds, rd, O.identity(rc, digest, kernel_samples(rc.callbacks, ds.n_train, ds.d_out)),
                              replica))
    ident = O.job_identity([m.identity for m in members]) if cfg.sweep.replicas else members[0].identity
    check = replan(JobCheck(cfg, run_dir, members, ident, None))
    check_writable(check)
    return check


def check_creatable(run_dir: Path) -> None:
    """The run directory is a directory, or can be made: every component of its path fits the filesystem's
    name length, nothing on the way is a file or a dangling link, and its nearest existing ancestor takes a
    new directory (probed with an empty one, removed at once: permissions alone do not tell, e.g. on /proc
    or a read-only mount). Whether an existing directory is writable depends on the plan (check_writable)."""
    import tempfile

    fix = "choose another paths.root, hydra.run.dir or hydra.sweep.dir"
    for part in run_dir.parts:
        if len(os.fsencode(part)) > 255:
            raise ConfigError(f"run directory {run_dir}: the component {part[:40]}... is {len(os.fsencode(part))} "
                              f"bytes, over the 255 a file name may have; {fix}")
    if run_dir.is_dir():
        return
    for p in (run_dir, *run_dir.parents):
        if p.is_symlink() and not p.exists():
            raise ConfigError(f"run directory {run_dir}: {p} is a link to nothing ({os.readlink(p)}); {fix}")
        if p.exists() and not p.is_dir():
            raise ConfigError(f"run directory {run_dir}: {p} exists and is not a directory; {fix}")
    parent = next(p for p in run_dir.parents if p.exists())
    try:
        Path(tempfile.mkdtemp(prefix=".cotresnet-probe-", dir=parent)).rmdir()
    except OSError as e:
        raise ConfigError(f"run directory {run_dir} cannot be created ({e.strerror or e}); choose another "
                          "paths.root, hydra.run.dir or hydra.sweep.dir") from e


def check_writable(check: JobCheck) -> None:
    """A job that will write (anything but a finished run's 'done') needs its existing directories writable."""
    if check.plan.action == "done":
        return
    for d in dict.fromkeys([check.run_dir] + [m.run_dir for m in check.members]):
        if d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
            raise ConfigError(f"run directory {d} is not writable, and the job would {check.plan.action} its run "
                              "there; make it writable or choose another hydra.run.dir / hydra.sweep.dir")


def replan(check: JobCheck) -> JobCheck:
    """(Re)decide what the job does in its directory, e.g. once it holds the lock (another job may have
    written there since the first check); inspects the checkpoint the plan resumes from."""
    from ..rundir import ownership as O

    check.plan = O.plan(check.cfg, check.run_dir, check.identity, [m.run_dir for m in check.members])
    path = check.plan.checkpoint
    stamp = _stamp(path) if path is not None else None
    if path is None:
        check.checkpoint = None
    elif check.checkpoint is None or stamp != check.checkpoint_stamp:
        check.checkpoint = inspect_checkpoint(path, check.cfg, check.identity)
    check.checkpoint_stamp = stamp
    return check


def _changed_layout(info: dict, cfg) -> str:
    """'key: old -> new' for each layout key a checkpoint's run had otherwise (one process before ranks existed)."""
    from ..config.layout import layout_keys

    new = layout_keys(cfg)
    old = info.get("layout") or dict.fromkeys(new, 1)
    return "; ".join(f"{k}: {old.get(k)} -> {v}" for k, v in new.items() if old.get(k) != v)


def _stamp(path: Path) -> Optional[tuple]:
    """(inode, size, mtime) of a file, None when it cannot be read: a checkpoint replaced since it was loaded
    (atomically, by another job) has another one."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def inspect_checkpoint(path: Path, cfg, ident: dict) -> dict:
    """Load a checkpoint safely (weights_only) and check it belongs to this configuration's trajectory."""
    from ..rundir.atomic import load_trusted

    where = f"resume={str(path)!r}" if cfg.resume not in ("auto", "never") else f"checkpoint {path}"
    if not Path(path).is_file():
        raise ConfigError(f"{where} is not a readable file; use never, auto or a checkpoint path")
    try:
        ckpt = load_trusted(path, mmap=True)  # the tensors are read when used (by Lightning's restore)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("cotresnet"), dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{where} is not a cotresnet checkpoint (no 'cotresnet' / 'state_dict' entry)")
    info = ckpt["cotresnet"]
    if info.get("format", 1) != CHECKPOINT_FORMAT:
        raise ConfigError(f"{where} was written by another version of cotresnet (checkpoint format "
                          f"{info.get('format', 1)}; this one reads {CHECKPOINT_FORMAT}); set resume=never to start "
                          "the run again")
    changed = _changed_layout(info, cfg)
    if changed:
        raise ConfigError(f"{where} was written by ranks in another layout ({changed}); resume needs the same "
                          "layout (its all-reduces add in that order), or set resume=never to start again")
    if info.get("fingerprint") != ident["fingerprint"]:
        from ..rundir.ownership import differences

        diff = "; ".join(differences(info.get("identity") or {}, ident)) or "no identity recorded"
        raise ConfigError(f"{where} belongs to another configuration ({diff}); resume needs the same model, init, "
                          "data, optim and seed")
    if info.get("global_step", 0) > cfg.trainer.max_steps:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps} is below the step {info['global_step']} "
                          f"{where} was written at; raise it, or set resume=never to start again")
    return ckpt
