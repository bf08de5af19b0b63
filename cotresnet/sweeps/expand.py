"""A multirun's jobs as the sweeper and the launcher will number and place them: their overrides, task
configurations and job directories (hydra.sweep.dir / hydra.sweep.subdir). No torch."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, open_dict

from ..config.compose import task_config
from ..errors import ConfigError

# Each job's configuration as the sweep's checks composed it, until Hydra's launcher asks for it: composing
# costs 0.1 s a job, and Hydra would compose every job twice more (its sweeper's validation, its launcher).
# Keyed by the sweep's config object's id, which the entry holds (no other object can take that id meanwhile).
_COMPOSED: Dict[Tuple[int, Tuple[str, ...]], Tuple[DictConfig, DictConfig]] = {}


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
        composed = loader.load_sweep_config(config, list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"[{' '.join(overrides)}] {composition_error(e)}") from e
    _COMPOSED[_key(config, overrides)] = config, composed
    return composed


def _key(config: DictConfig, overrides: Sequence[str]) -> Tuple[int, Tuple[str, ...]]:
    return id(config), tuple(overrides)


def composed(config: DictConfig, overrides: Sequence[str]) -> bool:
    """Whether this sweep's checks composed the job of these overrides (Hydra's validation of it is done)."""
    return _key(config, overrides) in _COMPOSED


def forget_compositions() -> None:
    """Drop the compositions of a sweep (it starts or ends; a sweeper that launches elsewhere left them)."""
    _COMPOSED.clear()


class ReusingLoader:
    """Hydra's config loader, answering load_sweep_config with the configuration the sweep's checks composed
    (once: the launcher sets the job's number in it), composing as Hydra does otherwise. Pickled with a
    launcher that runs jobs elsewhere (joblib, submitit), it composes there: the compositions stay here."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_loader":  # unpickling looks attributes up before __init__
            raise AttributeError(name)
        return getattr(self._loader, name)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides):
        master, reused = _COMPOSED.pop(_key(master_config, sweep_overrides), (None, None))
        if master is master_config:
            return reused
        return self._loader.load_sweep_config(master_config, sweep_overrides)


def reusing_compositions(hydra_context):
    """A sweeper's HydraContext whose loader reuses the checks' compositions (ReusingLoader)."""
    from dataclasses import replace

    if hydra_context is None or isinstance(hydra_context.config_loader, ReusingLoader):
        return hydra_context
    return replace(hydra_context, config_loader=ReusingLoader(hydra_context.config_loader))


def sweep_jobs(config: DictConfig, refused: Optional[List[str]] = None):
    """(overrides, task config, job directory) of every job of a multirun by our grid sweepers, in launch
    order (as BasicSweeper: hydra.sweeper.params, i.e. experiments, first, then the command line). A job
    Hydra cannot compose raises ConfigError, or with `refused` given is skipped, its refusal appended."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .vectorize import split_jobs

    parser = OverridesParser.create()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = parser.parse_overrides(params + list(config.hydra.overrides.task))
    loader = GlobalHydra.instance().config_loader()
    jobs = [overrides for batch in split_jobs(parsed, list(config.sweep.vectorize)) for overrides in batch]
    for idx, overrides in enumerate(jobs):
        try:
            job_cfg = load_job_config(loader, config, overrides)
        except ConfigError as e:
            if refused is None:
                raise
            refused.append(str(e))
            continue
        with open_dict(job_cfg):
            job_cfg.hydra.job.num = job_cfg.hydra.job.id = idx
        yield overrides, task_config(job_cfg), job_dir(job_cfg)
