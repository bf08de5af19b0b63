"""Hydra entry point: config -> data + particles -> Lightning training -> run directory.

    cotresnet-train [overrides]          python -m cotresnet.train [overrides]
"""
from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import signal
import sys
import time
import traceback
import uuid
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import __version__
from .config import ConfigError, register, validate, validate_against_data
from .data import Dataset, load_dataset

log = logging.getLogger("cotresnet")
# Lightning's banners (accelerator, tips) drown the run's own summary; its warnings still show.
for _name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
register()
if not OmegaConf.has_resolver("uid"):
    # six random hex digits: run directories stay unique when many jobs start in the same second
    OmegaConf.register_new_resolver("uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
if not OmegaConf.has_resolver("mul"):
    # products of config values, e.g. model.M: ${mul:2,${model.L},${model.L}} ties width to depth
    OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(xs))

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def check_config(cfg) -> Dataset:
    """Every check that can run before anything is written; returns the (float64) dataset."""
    validate(cfg)
    dataset = load_dataset(cfg.data)
    validate_against_data(cfg, dataset.d_in, dataset.d_out, dataset.x_train.shape[0])
    if cfg.resume not in ("never", "auto"):
        inspect_checkpoint(Path(cfg.resume), cfg)
    return dataset


def inspect_checkpoint(path: Path, cfg) -> dict:
    """Load a checkpoint safely (weights_only) and check it belongs to this configuration."""
    from .atomic import load_trusted

    if not path.is_file():
        raise ConfigError(f"resume={str(path)!r} is not a readable file; use never, auto or a checkpoint path")
    try:
        ckpt = load_trusted(path)
    except ValueError as e:
        raise ConfigError(f"resume={str(path)!r}: {e}") from e
    if not isinstance(ckpt, dict) or "cotresnet" not in ckpt or "state_dict" not in ckpt:
        raise ConfigError(f"resume={str(path)!r} is not a cotresnet checkpoint (no 'cotresnet' / 'state_dict' entry)")
    u = ckpt["state_dict"].get("net.u")
    want = (cfg.model.L, cfg.model.M, cfg.model.d)
    if u is None or tuple(u.shape[-3:]) != want:
        raise ConfigError(f"resume={str(path)!r} holds particles of shape {None if u is None else tuple(u.shape)}, "
                          f"but model.L, model.M, model.d = {want}")
    return ckpt


def compose_config(overrides=()) -> DictConfig:
    """The composed training config for a list of overrides, outside a Hydra run (scripts, tests)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _refuse(message: str) -> None:
    """Exit 2 with one line naming the field. SystemExit passes through Hydra's callback and error
    wrappers (they catch Exception), so nothing is created after it."""
    print(f"cotresnet: invalid configuration: {message}", file=sys.stderr)
    sys.exit(2)


def sweep_job_configs(config: DictConfig):
    """(overrides, composed config) of every job of a multirun, as the sweeper will launch them;
    a vectorized job yields one config per replica."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .sweeper import replica_config, split_jobs

    parser = OverridesParser.create()
    # as BasicSweeper: hydra.sweeper.params (experiments) first, then the command line
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + list(config.hydra.overrides.task))
    loader = GlobalHydra.instance().config_loader()
    for batch in split_jobs(parsed, list(config.sweep.vectorize)):
        for overrides in batch:
            job_cfg = loader.load_sweep_config(config, list(overrides))
            for replica in job_cfg.sweep.replicas:
                yield overrides + [replica], replica_config(job_cfg, replica)
            if not job_cfg.sweep.replicas:
                yield overrides, job_cfg


class ValidateConfig(HydraCallback):
    """Checks configs before Hydra creates any directory: the single run's, or every job of a sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_config(config)
        except ConfigError as e:
            _refuse(str(e))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper._target_ not in ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                                 "hydra_plugins.cotresnet_sweeper.VectorizingSweeper"):
            return  # other sweepers choose jobs as they go: each job checks itself
        bad = []
        for overrides, job_cfg in sweep_job_configs(config):
            try:
                check_config(job_cfg)
            except ConfigError as e:
                bad.append(f"[{' '.join(overrides)}] {e}")
        if bad:
            _refuse(f"{len(bad)} sweep job(s) refused, nothing launched:\n  " + "\n  ".join(bad))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .report import count_statuses

        print(count_statuses(Path(config.hydra.sweep.dir)))


def versions() -> Dict[str, str]:
    import lightning
    import torchdiffeq

    return {"cotresnet": __version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "torchdiffeq": torchdiffeq.__version__, "hydra": hydra.__version__, "python": platform.python_version()}


def flat_config(cfg) -> Dict[str, Any]:
    """The config as one flat dict with dotted keys (searchable on dashboards)."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node if not isinstance(node, list) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def make_loggers(cfg, run_dir: Path, wandb_id: str, concurrent: bool = False):
    """metrics.csv always; TensorBoard and wandb when selected. `concurrent`: several wandb runs live
    in this process at once (replicas); otherwise a new run finishes any previous one (joblib workers)."""
    from .rundir import MetricsCSV

    loggers = [MetricsCSV(run_dir)]
    if cfg.logger.tensorboard is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        tb = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        tb.log_hyperparams(flat_config(cfg))
        loggers.append(tb)
    if cfg.logger.wandb is not None:
        from lightning.pytorch.loggers import WandbLogger

        wc = cfg.logger.wandb
        loggers.append(WandbLogger(
            project=wc.project, entity=wc.entity, mode=wc.mode, group=wc.group or sweep_group(),
            tags=list(wc.tags), name=job_name(run_dir), save_dir=str(run_dir), config=flat_config(cfg),
            reinit="create_new" if concurrent else "finish_previous", id=wandb_id, resume="allow",
        ))
    return loggers


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group():
    return Path(HydraConfig.get().sweep.dir).name if _multirun() else None


def job_name(run_dir: Path) -> str:
    if _multirun():
        sweep_dir = Path(HydraConfig.get().sweep.dir)
        try:
            return f"{sweep_dir.name}/{Path(run_dir).relative_to(sweep_dir)}"
        except ValueError:
            return f"{sweep_dir.name}/{Path(run_dir).name}"
    return Path(run_dir).name


def train(cfg, dataset: Dataset, run_dir: Path, replicas: Optional[List[tuple]] = None):
    """Train one network into `run_dir` and return its summary; or, with `replicas` =
    [(cfg_r, dataset_r, run_dir_r), ...], train R networks of one shape together (one batched matmul
    per layer), each with the full run directory of its own, and return their summaries. `cfg` and
    `run_dir` are then the job's: its checkpoint lives there."""
    import lightning as pl

    from .atomic import atomic_torch_save
    from .callbacks import Checkpointer, FlowDiagnostics, set_rng_states
    from .data import stack_datasets
    from .model import ReplicatedResNet, build_model
    from .module import COTFlowModule, FlowDataModule

    t0 = time.time()
    vectorized = replicas is not None
    members = replicas if vectorized else [(cfg, dataset, run_dir)]
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    torch.manual_seed(cfg.seed)
    nets = [build_model(c, d.d_in, d.d_out) for c, d, _ in members]
    net = ReplicatedResNet(nets) if vectorized else nets[0]
    if cfg.model.activation == "relu":
        log.warning("activation=relu lies outside the theory's regularity assumptions (see README)")
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    resume_from = None
    if cfg.resume == "auto" and ckpt_path.is_file():
        resume_from = ckpt_path
    elif cfg.resume not in ("never", "auto"):
        resume_from = Path(cfg.resume)
    ckpt = inspect_checkpoint(resume_from, cfg)["cotresnet"] if resume_from else {}
    start = ckpt.get("global_step", 0)
    # wandb ids allow no ',', '/', ...: random hex, kept across resumes
    wandb_ids = ckpt.get("wandb_ids") or [uuid.uuid4().hex[:12] for _ in members]
    module = COTFlowModule(net, [c.optim.dt for c, _, _ in members] if vectorized else cfg.optim.dt,
                           cfg.optim.parameterization, cfg.trainer.compile)
    diags, all_loggers = [], []
    for r, ((c, d, rd), wid) in enumerate(zip(members, wandb_ids)):
        atomic_torch_save(d.tensors(), rd / "data.pt")
        loggers = make_loggers(c, rd, wid, concurrent=vectorized)
        if resume_from:
            loggers[0].truncate_from(start)  # rows after the checkpoint are recomputed
        all_loggers.append(loggers)
        diags.append(FlowDiagnostics(d, c.callbacks.n_probe, c.trainer.log_every, c.callbacks.kernel_every,
                                     c.callbacks.ot_every, c.trainer.converge_ratio, c.trainer.fail_on_divergence,
                                     replica=r if vectorized else None, loggers=loggers if vectorized else None))
    if resume_from:
        log.info("resuming from %s at step %d", resume_from, start)
    callbacks = list(diags)
    if cfg.checkpoint_every or "SLURM_JOB_ID" in os.environ:
        checkpointer = Checkpointer(ckpt_path, cfg.checkpoint_every,
                                    {"wandb_ids": wandb_ids, "L": cfg.model.L, "M": cfg.model.M, "d": cfg.model.d})
        callbacks.append(checkpointer)
        _checkpoint_on_preemption(checkpointer)
    trainer = pl.Trainer(
        max_steps=cfg.trainer.max_steps, max_epochs=-1, accelerator=cfg.trainer.accelerator, devices=1,
        logger=False if vectorized else all_loggers[0], callbacks=callbacks, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
        log_every_n_steps=1, precision="64-true" if cfg.model.dtype == "float64" else "32-true",
        default_root_dir=str(run_dir), plugins=_cluster_plugins(),
    )
    data = stack_datasets([d for _, d, _ in members]) if vectorized else dataset
    dm = FlowDataModule(data.to(getattr(torch, cfg.model.dtype)), cfg.trainer.max_steps, cfg.optim.batch_size,
                        cfg.seed, start=start)
    if ckpt:
        set_rng_states(ckpt["rng"])
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None, weights_only=True)
    summaries = [_finish(c, rd, module.replica_net(r if vectorized else None), diag, loggers, trainer, t0)
                 for r, ((c, _, rd), diag, loggers) in enumerate(zip(members, diags, all_loggers))]
    return summaries if vectorized else summaries[0]


def _finish(cfg, run_dir: Path, net, diag, loggers, trainer, t0: float) -> Dict[str, Any]:
    """particles.pt, summary.json and plots of one trained network; closes its wandb run."""
    from .atomic import atomic_write_json, finite_or_none
    from .plots import plot_run
    from .rundir import save_particles

    s = diag.state
    steps = s["stopped_at"] or trainer.global_step
    meta = {**net.meta(), "parameterization": cfg.optim.parameterization, "dtype": cfg.model.dtype,
            "embedding_kind": cfg.model.embedding, "readout_kind": cfg.model.readout}
    save_particles(run_dir / "particles.pt", s["init"], net.particles(), meta)
    final = {k: finite_or_none(v) for k, v in s["last_finite"].items()}
    summary = {
        "status": s["status"], "steps": steps, "flow_time": steps * cfg.optim.dt,
        "diverged_at": s["diverged_at"], "final": final, "risk_init": finite_or_none(s["risk0"]),
        "min_pl_ratio": finite_or_none(s["min_pl_ratio"]),
        "certificate": {"lambda_min_tangent_init": s["lambda0"], "c0": s["c0"],
                        "certified_radius": finite_or_none(s["certified_radius"]),
                        "n_probe": diag.n_probe, "inside_certified_region": s["inside_certified_region"]
                        if s["lambda0"] is not None else None},
        "lambda_min_feature_layers": {
            "init": None if diag.lambda_layers_init is None else diag.lambda_layers_init.tolist(),
            "final": None if diag.lambda_layers_final is None else diag.lambda_layers_final.tolist()},
        "wall_time_s": time.time() - t0, "seed": cfg.seed, "versions": versions(), "run_dir": str(run_dir),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    plot_run(run_dir, s["certified_radius"])
    for lg in loggers:
        if lg.__class__.__name__ == "WandbLogger":
            lg.experiment.summary.update({"status": s["status"], **{k: v for k, v in final.items() if v is not None}})
            lg.experiment.finish()
    return summary


def _checkpoint_on_preemption(checkpointer) -> None:
    """Under submitit, SIGUSR2 announces pre-emption or the time limit: finish the current step, write
    a checkpoint, then hand the signal to submitit's handler (which requeues the job; resume=auto)."""
    previous = signal.getsignal(signal.SIGUSR2)
    if not callable(previous):
        return

    def handler(signum, frame):
        log.warning("signal %d: checkpointing before submitit requeues the job", signum)
        checkpointer.request(lambda: previous(signum, frame))

    signal.signal(signal.SIGUSR2, handler)


def _cluster_plugins():
    """Under SLURM, Lightning's own requeue handling is off: submitit owns signals and requeueing."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]


def _print_summary(summary: Dict[str, Any]) -> None:
    f, c = summary["final"], summary["certificate"]
    g = lambda v: "n/a" if v is None else f"{v:.4g}"
    print(f"status={summary['status']} steps={summary['steps']} flow_time={summary['flow_time']:.4g} "
          f"wall={summary['wall_time_s']:.1f}s")
    print(f"risk_train {g(summary['risk_init'])} -> {g(f.get('risk_train'))}   risk_test {g(f.get('risk_test'))}   "
          f"min P-L ratio {g(summary['min_pl_ratio'])}")
    print(f"lambda_min(K) {g(c['lambda_min_tangent_init'])} -> {g(f.get('lambda_min_tangent'))}   "
          f"W_COT(mu_t, mu_0) {g(f.get('cot_dist_init'))}   path {g(f.get('path_length'))}   "
          f"certified radius {g(c['certified_radius'])}   inside: {c['inside_certified_region']}")
    print(f"run directory: {summary['run_dir']}")


def _remove_if_only_hydra(run_dir: Path) -> None:
    """A job whose config fails its checks leaves nothing: drop the directory Hydra made for it."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", f"{HydraConfig.get().job.name}.log"}:
        shutil.rmtree(run_dir)


def _replica_members(cfg, run_dir: Path) -> List[tuple]:
    """(config, dataset, run directory) of every replica of a vectorized job; each directory gets the
    .hydra/config.yaml and overrides.yaml a separate job would have (the report reads them)."""
    from .sweeper import replica_config, replica_dirname

    job_overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("sweep.")] \
        if HydraConfig.initialized() else []
    members = []
    for replica in cfg.sweep.replicas:
        rc = replica_config(cfg, replica)
        rd = run_dir / replica_dirname(replica)
        (rd / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(rc, rd / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(job_overrides + replica.split()), rd / ".hydra" / "overrides.yaml")
        members.append((rc, check_config(rc), rd))
    return members


def _record_failure(cfg, run_dir: Path, error: Exception) -> None:
    from .atomic import atomic_write_bytes, atomic_write_json

    atomic_write_bytes(run_dir / "traceback.txt", traceback.format_exc().encode())
    atomic_write_json(run_dir / "summary.json", {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                                 "seed": cfg.seed, "versions": versions(), "run_dir": str(run_dir)})


def run(cfg: DictConfig):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        dataset = check_config(cfg)
        members = _replica_members(cfg, run_dir) if cfg.sweep.replicas else None
    except ConfigError:
        _remove_if_only_hydra(run_dir)
        raise
    try:
        result = train(cfg, dataset, run_dir, replicas=members)
    except Exception as e:
        for c, _, rd in members or [(cfg, dataset, run_dir)]:
            _record_failure(c, rd, e)
        log.error("job failed: %s (traceback in %s)", e, run_dir)
        if _multirun():
            return {"status": "failed"}  # the sweep goes on; the report counts it
        raise
    for summary in result if members else [result]:
        _print_summary(summary)
    return result


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> Dict[str, Any]:
    return run(cfg)


if __name__ == "__main__":
    main()
