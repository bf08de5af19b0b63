"""The public API's own functions (the rest of cotresnet.__all__ lives with its owners): run a job from
Python, and read a run or a sweep back. Documented in the README, "Using cotresnet from Python"."""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from .errors import RunDirError
from .rundir import contract as RD


def run_job(cfg, run_dir, overrides: Sequence[str] = ()) -> List[dict]:
    """Check and train the job of a composed configuration (`compose_config`) in `run_dir`, as
    `cotresnet-train` does: every check first (a ConfigError names the field, nothing is written), then the
    run directory's plan (new, restart, resume, or done without touching a file), training, files and figures.
    `overrides` are recorded in .hydra/overrides.yaml. Returns one summary per member (one, or the replicas)."""
    from omegaconf import DictConfig

    from .errors import ConfigError
    from .job.checks import check_job
    from .job.execute import execute
    from .job.fit import JobContext
    from .train import draw_run_figures

    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"run_job takes a composed configuration (cotresnet.compose_config([...])), not a "
                          f"{type(cfg).__name__}")
    run_dir = Path(run_dir).absolute()
    action, summaries = execute(check_job(cfg, run_dir), JobContext(list(overrides), name=run_dir.name))
    draw_run_figures(cfg, summaries, missing_only=action == "done")
    return summaries


class Run(NamedTuple):
    """A run directory read back: summary.json, metrics.csv (a DataFrame), the networks of the initial and
    final particles (particles.pt), the data in the networks' dtype (data.Dataset) and the composed
    configuration (a dict; None when .hydra/config.yaml is absent)."""

    run_dir: Path
    summary: Optional[dict]
    metrics: object
    init: object
    final: object
    data: object
    config: Optional[dict]


def load_run(run_dir) -> Run:
    """Read a run directory (RunDirError names a missing or malformed file). `run.final` is the trained
    network: `run.final.risk(run.data.x_train, run.data.y_train)` is the logged final risk."""
    import yaml

    from .data import Dataset
    from .model.build import network_from_meta

    run_dir = Path(run_dir)
    particles, data = RD.load_run_tensors(run_dir)
    meta = particles["meta"]
    try:
        init, final = (network_from_meta(particles[k], meta) for k in ("init", "final"))
    except (KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{run_dir / RD.PARTICLES}: 'meta' does not rebuild the network ({e})") from e
    splits = {k: data[k].to(final.u.dtype) for k in ("x_train", "y_train", "x_test", "y_test")}
    config_file = RD.config_path(run_dir)
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    return Run(run_dir, RD.read_summary(run_dir), RD.read_table(run_dir), init, final,
               Dataset(**splits, classification=bool(data.get("classification", False))), config)


def load_sweep(sweep_dir):
    """One row per run of a sweep directory (pandas DataFrame; a vectorized job has a run per replica): status,
    every configuration value (`cfg.` prefix), the run's command-line values (`sweep.` prefix, fixed ones
    included), final metrics and certificate; `path` is the run directory (read it with load_run)."""
    from .report.sweep import collect

    if not Path(sweep_dir).is_dir():
        raise RunDirError(f"{sweep_dir}: not a directory")
    return collect(Path(sweep_dir))

