"""Where a job's rows go: metrics.csv always (rundir's writer), TensorBoard and wandb when selected.
Each member of a job (a network or a replica) has its own loggers; none is shared between jobs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from ..rundir import contract as RD


class MetricsLog(RD.CSVWriter):
    """metrics.csv as a logger: the same log_metrics / finalize calls as the dashboards'."""

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / RD.METRICS, RD.COLUMNS)

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        self.append(metrics)

    def finalize(self, status: str) -> None:
        pass


def flat_config(cfg) -> Dict[str, Any]:
    """The config as one flat dict with dotted keys (searchable on dashboards); lists as strings."""
    flat = RD.flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: str(v) if isinstance(v, list) else v for k, v in flat.items()}


def make_loggers(cfg, run_dir: Path, wandb_id: str, name: str, group: Optional[str], start: int,
                 concurrent: bool) -> list:
    """metrics.csv (rows from `start` on dropped: a resumed run writes them again), TensorBoard, wandb.
    `concurrent`: several wandb runs live in this process at once (replicas)."""
    csv = MetricsLog(run_dir)
    csv.start()
    csv.truncate_from(start)
    loggers: list = [csv]
    if cfg.logger.tensorboard is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        # purge_step: TensorBoard drops what a killed run logged after its checkpoint
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False,
                                         purge_step=start or None))
    if cfg.logger.wandb is not None:
        loggers.append(_wandb_logger(cfg, run_dir, wandb_id, name, group, concurrent))
    return loggers


def _wandb_logger(cfg, run_dir: Path, wandb_id: str, name: str, group: Optional[str], concurrent: bool):
    wc = cfg.logger.wandb
    if wc.quiet:  # before wandb reads its settings
        os.environ.setdefault("WANDB_SILENT", "true")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    # our own wandb.init (Lightning's passes settings wandb now deprecates, which it warns about)
    run = wandb.init(project=wc.project, entity=wc.entity, mode=wc.mode, group=wc.group or group,
                     tags=list(wc.tags) + list(cfg.tags), name=name, dir=str(run_dir), config=flat_config(cfg),
                     reinit="create_new" if concurrent else "finish_previous", id=wandb_id, resume="allow",
                     settings=wandb.Settings(quiet=wc.quiet, console="off" if wc.quiet else "auto"))
    return WandbLogger(experiment=run)


def finalize_loggers(loggers: List, cfg, summary: Dict[str, Any]) -> None:
    """The run's final metrics and status on the dashboards: TensorBoard's HParams (the configuration
    against final metrics, so sweep jobs compare there) and wandb's run summary; then close them."""
    final = {k: v for k, v in (summary.get("final") or {}).items() if isinstance(v, (int, float))}
    for lg in loggers:
        kind = type(lg).__name__
        if kind == "TensorBoardLogger":
            _hparams(lg.experiment, {**flat_config(cfg), "status": summary["status"]},
                     {f"final/{k}": v for k, v in final.items()}, summary.get("steps") or 0)
        elif kind == "WandbLogger":
            lg.experiment.summary.update({"status": summary["status"], "steps": summary.get("steps"), **final})
            lg.experiment.finish()
            continue
        lg.finalize("success" if summary["status"] in RD.FINISHED else summary["status"])


def _hparams(writer, params: Dict[str, Any], metrics: Dict[str, float], step: int) -> None:
    """TensorBoard's HParams entry of the run: its configuration against its final metrics (logged as
    scalars at the final step, which is where the HParams tab reads them)."""
    from torch.utils.tensorboard.summary import hparams

    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    for part in hparams(clean, metrics):
        writer.file_writer.add_summary(part)
    for k, v in metrics.items():
        writer.add_scalar(k, v, step)
    writer.flush()
