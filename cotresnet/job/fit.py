"""Fitting one checked job: its members (one network, or the replicas of a vectorized job) trained
together into their run directories, from the plan `checks.check_job` made (new, restart, resume)."""
from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from omegaconf import OmegaConf

from ..config.derived import kernel_samples
from ..config.layout import layout_keys
from ..rundir import contract as RD
from .checks import JobCheck

log = logging.getLogger("cotresnet")


@dataclass
class JobContext:
    """What the Hydra face knows about the job: its overrides, Hydra's own config (for .hydra/hydra.yaml),
    the dashboard group (the sweep) and the job's name there."""

    overrides: List[str] = field(default_factory=list)
    hydra_cfg: object = None
    group: Optional[str] = None
    name: str = "run"


def prepare(check: JobCheck, ctx: JobContext) -> None:
    """Make the run directories this job's (execute cleared a restart's old outputs): identity and config."""
    RD.write_json(check.run_dir / RD.IDENTITY, check.identity)
    for m in check.members:
        hydra_dir = m.run_dir / RD.CONFIG_DIR
        hydra_dir.mkdir(parents=True, exist_ok=True)
        overrides = [o for o in ctx.overrides if not o.startswith("sweep.")] + (m.replica.split() if m.replica else [])
        # resolved: the values this run trained with (M = ${mul:2,${model.L},${model.L}} is M = 32 here), which
        # the report's table, load_run and cotresnet-compare read
        OmegaConf.save(m.cfg, hydra_dir / RD.CONFIG_YAML, resolve=True)
        OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
        if ctx.hydra_cfg is not None:
            OmegaConf.save(ctx.hydra_cfg, hydra_dir / "hydra.yaml")
        if m.replica:
            RD.write_json(m.run_dir / RD.IDENTITY, m.identity)
        if not (m.run_dir / RD.DATA).exists():
            from ..rundir.atomic import atomic_torch_save

            atomic_torch_save(m.dataset.tensors(), m.run_dir / RD.DATA)


def quiet_lightning() -> None:
    """Lightning's banners (accelerator, tips, the srun hint) drown the run's own lines; its warnings stay."""
    import warnings

    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    # a resumed run's loaders regenerate every step's batch from its step number (data.Minibatches)
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")


def _trainer(cfg, run_dir: Path, callbacks: list, checkpoint: Optional[Tuple[Path, dict]] = None, ranks=None):
    """The Lightning Trainer of a job; `checkpoint`: (path, the checkpoint the checks loaded), handed to
    Lightning's restore instead of a second read of the file; `ranks`: this rank's place (job.ranks.JobRanks)."""
    import lightning as pl

    from .callbacks import PreloadedCheckpointIO

    quiet_lightning()
    plugins = [PreloadedCheckpointIO(*checkpoint)] if checkpoint else []
    if ranks is None and "SLURM_JOB_ID" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))  # submitit owns signals and requeueing
    return pl.Trainer(
        max_steps=cfg.trainer.max_steps, max_epochs=-1, accelerator=cfg.trainer.accelerator, logger=False,
        callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1,
        precision="64-true" if cfg.model.dtype == "float64" else "32-true", default_root_dir=str(run_dir),
        plugins=plugins or None, **(ranks.trainer_args(cfg) if ranks else {"devices": 1}),
        **OmegaConf.to_container(cfg.trainer.extra),
    )


def _table(path: Path, columns: List[str], start: int) -> RD.CSVWriter:
    """A CSV of the run directory, with the rows of a resumed run's future steps dropped."""
    writer = RD.CSVWriter(path, columns)
    writer.start()
    writer.truncate_from(start)
    return writer


def _network_and_module(check: JobCheck, ranks=None):
    """The job's network (one, its members as replicas, or this rank's shard) and the module that steps it."""
    from ..model.build import student_network
    from ..model.replicas import ReplicatedResNet
    from .module import COTFlowModule

    cfg, members = check.cfg, check.members
    torch.manual_seed(cfg.seed)
    nets = [student_network(m.cfg, m.dataset.d_in, m.dataset.d_out) for m in members]
    if ranks is not None:
        return ranks.network_and_module(nets[0], members[0].dataset.n_train, cfg.optim)
    replicated = bool(cfg.sweep.replicas)
    net = ReplicatedResNet(nets) if replicated else nets[0]
    if cfg.model.activation == "relu":
        log.warning("activation=relu lies outside the theory's regularity assumptions (see docs/math.md)")
    dt = [m.cfg.optim.dt for m in members] if replicated else cfg.optim.dt
    return net, COTFlowModule(net, dt, cfg.optim.parameterization, cfg.trainer.compile, cfg.optim.geometry,
                              cfg.optim.depth_weight)


def _diagnostics(check: JobCheck, ctx: JobContext, module, data, start: int, wandb_ids: List[str], writes=True):
    """The FlowDiagnostics callback that keeps the job's record, and each member's loggers and tables (none on
    a rank that writes nothing: its record takes the same stops)."""
    from ..config.replicas import replica_dirname
    from ..record import FlowRecord
    from .flow_callback import Cadence, FlowDiagnostics, MemberOutputs
    from .loggers import make_loggers

    cfg, first = check.cfg, check.members[0]
    outputs = []
    for m, wid in zip(check.members if writes else [], wandb_ids):
        name = ctx.name + (f"/{replica_dirname(m.replica)}" if m.replica else "")
        swept = [o.split("=", 1)[0].lstrip("+~") for o in ctx.overrides + (m.replica or "").split()
                 if "=" in o and not o.startswith(("sweep.", "hydra"))]
        loggers = make_loggers(m.cfg, m.run_dir, wid, name, ctx.group, start, concurrent=bool(cfg.sweep.replicas),
                               swept_keys=swept)
        depths = _table(m.run_dir / RD.DEPTHS, RD.DEPTH_COLUMNS, start) if cfg.model.depth_kernel else None
        outputs.append(MemberOutputs(m.dataset.to(module.net.u.dtype), loggers,
                                     _table(m.run_dir / RD.SPECTRUM, RD.SPECTRUM_COLUMNS, start), depths,
                                     cfg.model.activation))
    cadence = Cadence(cfg.trainer.log_every, cfg.callbacks.kernel_every, cfg.callbacks.ot_every,
                      kernel_samples(cfg.callbacks, first.dataset.n_train, first.dataset.d_out),
                      cfg.trainer.fail_on_divergence, full_batch_rows=cfg.optim.batch_size is not None,
                      kernel_memory=cfg.callbacks.kernel_memory_mb * 2**20)
    record = FlowRecord([m.cfg.trainer.converge_ratio for m in check.members], len(check.members),
                        depth=cfg.model.depth_kernel is not None)
    return FlowDiagnostics(record, data, outputs, cadence, module.depth_lr_factor)


def fit(check: JobCheck, ctx: JobContext, ranks=None) -> List[dict]:
    """Train every member of the job and write its run directory; returns their summaries. Raises
    resume.Interrupted after writing everything when a signal stopped training. `ranks` (job.ranks.JobRanks):
    this process is one rank of the job; rank 0 writes, the others compute and return no summary."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from ..data import stack_datasets
    from . import threads
    from .callbacks import Checkpointer, StopOnRequest
    from .memory import keep_freed_memory
    from .module import FlowDataModule
    from .progress import progress_callback
    from .resume import GracefulStop, Interrupted, set_rng_states

    t0 = time.time()
    cfg, members, plan = check.cfg, check.members, check.plan
    keep_freed_memory()
    writes = ranks is None or ranks.groups.is_root
    n_threads = threads.configure(cfg.trainer.threads, members[0].dataset.n_train, cfg.model.M, cfg.model.d,
                                  len(members), *(ranks.threads_share(cfg) if ranks else ()))
    if writes:
        prepare(check, ctx)
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    net, module = _network_and_module(check, ranks)
    info = check.checkpoint_info or {}
    start = info.get("global_step", 0)
    wandb_ids = info.get("wandb_ids") or [uuid.uuid4().hex[:12] for _ in members]
    data = (stack_datasets([m.dataset for m in members]) if cfg.sweep.replicas else members[0].dataset).to(net.u.dtype)
    diag = _diagnostics(check, ctx, module, data, start, wandb_ids, writes)
    checkpointer = Checkpointer(check.run_dir / RD.CHECKPOINT, cfg.checkpoint_every,
                                {"fingerprint": check.identity["fingerprint"], "identity": check.identity,
                                 "wandb_ids": wandb_ids, "layout": layout_keys(cfg)})
    stop = StopOnRequest()
    shown = [progress_callback(cfg.trainer.progress, diag.record, cfg.trainer.max_steps, check.run_dir)] \
        if cfg.trainer.progress != "none" and writes else []
    # several ranks: what rank 0's signal handlers ask, every rank applies after the same step
    graceful, agree = ranks.agreement(stop, checkpointer) if ranks else (GracefulStop(stop, checkpointer), [])
    trainer = _trainer(cfg, check.run_dir, [*agree, checkpointer, stop, diag, *shown],
                       (plan.checkpoint, check.checkpoint) if plan.checkpoint is not None else None, ranks)
    dm = FlowDataModule(ranks.samples(data) if ranks else data, cfg.trainer.max_steps, cfg.optim.batch_size, cfg.seed,
                        start=start)
    if plan.checkpoint is not None:
        log.info("resuming from %s at step %d", plan.checkpoint, start)
        set_rng_states(info["rng"])
    with graceful:
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=str(plan.checkpoint) if plan.checkpoint else None,
                        weights_only=True)
        except SIGTERMException:
            stop.requested = stop.requested or 15
    module = module.gathered()  # the whole network, on the rank that writes
    if module is None:
        return []
    diag.record.finish(trainer.global_step, interrupted=stop.requested is not None)
    diag.final_rows(module)
    summaries = [_finish(m, r, module, diag, t0, n_threads) for r, m in enumerate(members)]
    if stop.requested is not None:
        raise Interrupted(stop.requested, summaries)
    return summaries


def versions() -> dict:
    import platform
    from importlib.metadata import version

    from .. import __version__

    packages = {"torch": "torch", "lightning": "lightning", "torchdiffeq": "torchdiffeq", "hydra": "hydra-core"}
    return {"cotresnet": __version__, **{k: version(p) for k, p in packages.items()},
            "python": platform.python_version()}


def _finish(m, r: int, module, diag, t0: float, n_threads: int) -> dict:
    """particles.pt and summary.json of member r (its final row is logged); closes its loggers."""
    from .loggers import finalize_loggers

    rec, net, tau = diag.record, module.member_net(r), module.tau(r)
    meta = {**net.meta(), "parameterization": m.cfg.optim.parameterization, "geometry": m.cfg.optim.geometry,
            "depth_weight": m.cfg.optim.depth_weight, "fingerprint": m.identity["fingerprint"],
            "step": rec.steps(r)}
    RD.save_particles(m.run_dir / RD.PARTICLES, rec.members[r].init, net.particles(), meta)
    summary = write_summary(m, {**rec.summary(r, tau), "wall_time_s": time.time() - t0, "threads": n_threads,
                                "kernel_samples": diag.cadence.n_kernel})
    finalize_loggers(diag.outputs[r].loggers, m.cfg, summary)
    return summary


def write_summary(m, fields: dict) -> dict:
    """summary.json of one member: `fields` (status first) and what identifies the run; returns it. The one
    place a job writes its summary (RD.write_summary checks the schema)."""
    summary = {**fields, "seed": m.cfg.seed, "versions": versions(), "run_dir": str(m.run_dir),
               "fingerprint": m.identity["fingerprint"], "tags": list(m.cfg.tags)}
    RD.write_summary(m.run_dir, summary)
    return summary
