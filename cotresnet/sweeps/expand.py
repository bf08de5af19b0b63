"""A multirun's jobs as the sweeper and the launcher will number and place them: their overrides, task
configurations and job directories (hydra.sweep.dir / hydra.sweep.subdir). No torch."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import ConfigError


def task_config(config: DictConfig) -> DictConfig:
    """The job's own configuration: Hydra's composed config without its `hydra` node."""
    return OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"]) if "hydra" in config else config


def job_dir(job_cfg: DictConfig) -> Path:
    """Where a job of a multirun writes: hydra.sweep.dir / hydra.sweep.subdir (hydra.job.num set)."""
    return Path(str(job_cfg.hydra.sweep.dir)) / str(job_cfg.hydra.sweep.subdir)


def load_job_config(loader, config: DictConfig, overrides) -> DictConfig:
    """Hydra's configuration of one job of a sweep; a value Hydra cannot compose (model.L=4,abc) is a
    ConfigError naming the job's overrides and the key."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..config.keys import composition_error

    try:
        return loader.load_sweep_config(config, list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"[{' '.join(overrides)}] {composition_error(e)}") from e


def sweep_jobs(config: DictConfig):
    """(overrides, task config, job directory) of every job of a multirun by our grid sweepers, in launch
    order (as BasicSweeper: hydra.sweeper.params, i.e. experiments, first, then the command line)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .vectorize import split_jobs

    parser = OverridesParser.create()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + list(config.hydra.overrides.task))
    loader = GlobalHydra.instance().config_loader()
    idx = 0
    for batch in split_jobs(parsed, list(config.sweep.vectorize)):
        for overrides in batch:
            job_cfg = load_job_config(loader, config, overrides)
            with open_dict(job_cfg):
                job_cfg.hydra.job.num = job_cfg.hydra.job.id = idx
            yield overrides, task_config(job_cfg), job_dir(job_cfg)
            idx += 1
