"""Every check of a sweep before its first job: each job of a grid (our sweepers), the search space and the
base configuration of a sweeper that chooses its jobs as it goes (Optuna), and where the directories land.
A refusal is a ConfigError naming the job or the key."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError

_ABSENT = object()
# keys that place a run or a sweep where the user wants it: their paths are the user's choice
PLACING_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "paths.root", "paths.runs", "paths.sweeps")


def inside_root(config: DictConfig, paths: Iterable[Path]) -> None:
    """Unless the user placed them (PLACING_KEYS on the command line), run and sweep directories resolve
    inside paths.root: a value in a directory's name can never take it elsewhere."""
    overrides = [*config.hydra.overrides.task, *config.hydra.overrides.get("hydra", [])]
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    if given & set(PLACING_KEYS):
        return
    root = Path(str(config.paths.root)).resolve()
    for path in paths:
        if not Path(path).resolve().is_relative_to(root):
            raise ConfigError(f"{path} resolves outside paths.root={root}: a value in its name leaves the root; "
                              "name the directory with hydra.run.dir / hydra.sweep.dir if that is what you want")


def check_grid(config: DictConfig) -> Tuple[Dict[Path, object], Dict[str, int]]:
    """Every job of a grid sweep, checked as it will run (job.checks.check_job) before any is launched:
    ({job directory: its JobCheck}, {plan action: its runs}). Refuses (one line per bad job) a sweep with a bad
    job, a job directory outside its sweep, or values listed in another order than the ones that made an
    existing sweep directory."""
    from ..job.checks import check_job
    from ..rundir.ownership import renumbered, taken_numbers
    from .expand import forget_compositions, sweep_jobs

    forget_compositions()  # another sweep's, in this process
    vectorize = list(config.sweep.vectorize)
    if vectorize and "VectorizingSweeper" not in str(config.hydra.sweeper._target_):
        raise ConfigError(f"sweep.vectorize={vectorize} needs cotresnet's sweeper (hydra/sweeper=vectorizing, the "
                          "default): Hydra's basic sweeper would run every value as a job of its own")
    sweep_dir = Path(str(config.hydra.sweep.dir))  # resolved first: the jobs' configurations share its cache
    inside_root(config, [sweep_dir])
    bad: List[str] = []  # one line per bad job: those Hydra cannot compose, then those a check refuses
    jobs = list(sweep_jobs(config, bad))
    moved = renumbered([job_dir for _, _, job_dir in jobs])
    if moved:
        raise ConfigError(f"{moved[0][1]} holds the job that would now run as {moved[0][0].name} ({len(moved)} "
                          "job(s) numbered differently): this sweep lists its values in another order than the one "
                          "that made the directory; list them as before, or choose another hydra.sweep.dir")
    taken = taken_numbers([job_dir for _, _, job_dir in jobs])
    if taken:
        raise ConfigError(f"{taken[0][1]} is job {taken[0][1].name.partition('_')[0]} of another sweep (this sweep's is "
                          f"{taken[0][0].name}): a sweep directory holds one sweep (it may grow by more values of "
                          "its keys); choose another hydra.sweep.dir")
    checked, plans = {}, {}
    for overrides, job_cfg, job_dir in jobs:
        try:
            if not job_dir.resolve().is_relative_to(sweep_dir.resolve()):
                raise ConfigError(f"its directory {job_dir} resolves outside the sweep's {sweep_dir}")
            check = checked[job_dir.absolute()] = check_job(job_cfg, job_dir)
            plans[check.plan.action] = plans.get(check.plan.action, 0) + len(check.members)  # runs, as every count
        except ConfigError as e:
            bad.append(f"[{' '.join(overrides)}] {e}")
    if bad:
        raise ConfigError(f"{len(bad)} sweep job(s) refused, nothing launched:\n  " + "\n  ".join(bad))
    return checked, plans


def check_search_space(config: DictConfig) -> None:
    """A sweeper that chooses its jobs as it goes (Optuna): its base configuration passes every check that
    needs no run directory, the metric it optimizes is set, and each searched key is a configuration key
    whose values pass validation (every choice; both ends of an interval or a range)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import OmegaConfBaseException

    from ..config.keys import near_key
    from ..config.validate import validate
    from ..job.checks import check_config
    from .expand import task_config

    task = task_config(config)
    check_config(task)
    if task.optimized_metric is None:
        raise ConfigError(f"hydra/sweeper {config.hydra.sweeper._target_.rsplit('.', 1)[-1]} optimizes the value a "
                          "job returns: set optimized_metric (e.g. optimized_metric=risk_test)")
    params = OmegaConf.to_container(config.hydra.sweeper.get("params") or {})
    for override in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]):
        key = override.get_key_element().lstrip("+~")
        if OmegaConf.select(task, key, default=_ABSENT) is _ABSENT:
            near = near_key(key)
            raise ConfigError(f"hydra.sweeper.params.{key} is not a configuration key"
                              f"{f'; did you mean {near}' if near else ''}")
        for value in _values(override):
            probe = task.copy()
            try:
                OmegaConf.update(probe, key, value, merge=False)
                validate(probe)
            except (ConfigError, OmegaConfBaseException) as e:
                message = str(e).splitlines()[0]
                raise ConfigError(f"hydra.sweeper.params.{key} reaches {value!r}, which is refused: {message}") from e


def _values(override) -> List[object]:
    """The values a sweep override can take that bound the search: every choice, both ends otherwise."""
    if override.is_discrete_sweep():
        return list(override.sweep_iterator())
    if override.is_interval_sweep():
        interval = override.value()
        return [interval.start, interval.end]
    return [override.value()]
