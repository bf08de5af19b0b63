"""Hydra entry point: compose, check, hand over. Importing it imports no torch (fast shell completion).

    cotresnet-train [overrides]          python -m cotresnet.train [overrides]
"""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config.compose import CONF_DIR, experiment_conflicts, refuse_composition_errors, register_resolvers
from .errors import ConfigError, refuse, run_check
from .rundir import contract as RD

log = logging.getLogger("cotresnet")
OUR_SWEEPERS = ("hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "hydra_plugins.cotresnet_sweeper.VectorizingSweeper")
_CHECKED: Dict[Path, Any] = {}  # job checks the Hydra callbacks made in this process, by run directory
_SWEEP: Dict[str, Any] = {}  # the running sweep's directory and progress monitor (main process)
_RANKS: Dict[str, Any] = {}  # the ranks torchrun or srun started this process among, when main() serves them


def _check_sweep(config: DictConfig) -> None:
    """A grid sweep's jobs, checked before any is launched (sweeps.checks.check_grid), and its plan written:
    every job's runs (a vectorized job trains one per replica)."""
    from .sweeps.checks import check_grid

    checked, plans = check_grid(config)
    _CHECKED.update(checked)
    if set(plans) - {"new"}:
        print("sweep plan: " + ", ".join(f"{n} {a}" for a, n in sorted(plans.items())), file=sys.stderr)
    RD.write_sweep_plan(config.hydra.sweep.dir, "grid", sum(len(c.members) for c in checked.values()), len(checked))


def _plan_search(config: DictConfig) -> None:
    """The plan of a sweeper that chooses its jobs as it goes: n_trials jobs (Optuna's, Nevergrad's budget),
    each training the base configuration's replicas."""
    from .config.compose import task_config

    sweeper = config.hydra.sweeper
    trials = sweeper.get("n_trials", sweeper.get("optim", {}).get("budget"))
    runs_per_job = max(len(task_config(config).sweep.replicas), 1)
    RD.write_sweep_plan(config.hydra.sweep.dir, sweeper._target_.rsplit(".", 1)[-1],
                        None if trials is None else int(trials) * runs_per_job, trials)


class ValidateConfig(HydraCallback):
    """Checks every job before Hydra creates any directory: the single run's, or each job of a sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .config.compose import task_config
        from .job.checks import check_job
        from .sweeps.checks import inside_root

        if not str(config.hydra.run.dir).strip():
            refuse("hydra.run.dir is empty (the job would write into the current directory); give a directory")
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        run_check(experiment_conflicts, OmegaConf.to_container(config.hydra.overrides.task))  # unresolved
        run_check(inside_root, config, [run_dir])
        _CHECKED[run_dir] = run_check(check_job, task_config(config), run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from .report.monitor import SweepMonitor
        from .sweeps.checks import check_search_space
        if "submitit" in str(config.hydra.launcher.get("_target_", "")):
            from .sweeps.launchers import submitit_warnings_once

            submitit_warnings_once()

        run_check(experiment_conflicts, OmegaConf.to_container(config.hydra.overrides.task))  # unresolved
        if config.hydra.sweeper._target_ in OUR_SWEEPERS:
            run_check(_check_sweep, config)
        elif "ThresholdSweeper" not in config.hydra.sweeper._target_:  # it checks and plans each round itself
            run_check(check_search_space, config)  # other sweepers choose their jobs as they go
            _plan_search(config)
        _SWEEP["dir"] = Path(str(config.hydra.sweep.dir))
        _SWEEP["monitor"] = SweepMonitor(_SWEEP["dir"]).start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _end_sweep()
        if config.report.at_end:
            from .report.cli import report_at_end

            report_at_end(Path(str(config.hydra.sweep.dir)))


def _end_sweep(suffix: str = "") -> None:
    """Stop the sweep's monitor and print its count line."""
    from .report.sweep import count_statuses
    from .sweeps.expand import forget_compositions

    forget_compositions()
    if "monitor" in _SWEEP:
        _SWEEP.pop("monitor").stop()
    if "dir" in _SWEEP:
        sweep_dir = _SWEEP.pop("dir")
        line, plan = count_statuses(sweep_dir), RD.read_sweep_plan(sweep_dir)
        if suffix and plan and plan["runs"]:  # a stopped sweep: say how many of its runs it planned
            line += f"; {plan['runs']} planned"
        print(line + suffix, flush=True)


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _context(run_dir: Path):
    from .job.fit import JobContext

    hc = HydraConfig.get()
    if not _multirun():
        return JobContext(list(hc.overrides.task), hc, None, run_dir.name)
    sweep_dir = Path(hc.sweep.dir)
    name = f"{sweep_dir.name}/{run_dir.relative_to(sweep_dir) if run_dir.is_relative_to(sweep_dir) else run_dir.name}"
    return JobContext(list(hc.overrides.task), hc, sweep_dir.name, name)


def run(cfg: DictConfig):
    """The task function: (re)check the job, then own its directory and train it, or report it done."""
    from .job.checks import check_job
    from .job.execute import execute
    from .job.progress import print_summary
    from .job.resume import Interrupted

    run_dir = Path(HydraConfig.get().runtime.output_dir).absolute()
    if figure_formats(cfg, _multirun()):
        import threading

        from .report.style import warm_up

        threading.Thread(target=warm_up, name="cotresnet-figure-imports", daemon=True).start()
    try:
        check = _CHECKED.pop(run_dir, None) or check_job(cfg, run_dir)
        action, summaries = execute(check, _context(run_dir))
    except Interrupted as e:
        draw_run_figures(cfg, e.summaries, in_sweep=_multirun())
        raise
    except ConfigError as e:  # another job took the directory after the first check
        if not _multirun():
            refuse(str(e))
        log.error("job refused: %s", e)
        return math.inf if cfg.optimized_metric else {"status": "refused"}
    except Exception:
        if _multirun():
            return math.inf if cfg.optimized_metric else {"status": "failed"}  # the sweep goes on; the report counts it
        raise
    draw_run_figures(cfg, summaries, missing_only=action == "done", in_sweep=_multirun())
    if action == "done":
        print(f"already done ({check.plan.reason}): {run_dir}")
    else:
        for s in summaries:
            print_summary(s)
    return _returned(cfg, summaries)


def figure_formats(cfg, in_sweep: bool) -> List[str]:
    """The run figure's formats: cfg.plots, or null: png for a single run, none for the jobs of a sweep (whose
    figures live in the sweep report)."""
    return list(cfg.plots) if cfg.plots is not None else ([] if in_sweep else ["png"])


def draw_run_figures(cfg, summaries: List[dict], missing_only: bool = False, in_sweep: bool = False) -> None:
    """The run figure of each member, drawn after its job in figure_formats; `missing_only`: only where a
    finished run lacks it (a job interrupted while drawing)."""
    formats = figure_formats(cfg, in_sweep)
    if not formats:
        return
    from .report.run_figures import missing_figures, plot_run

    for s in summaries:
        if s and s.get("status") != "failed" and not (missing_only and not missing_figures(Path(s["run_dir"]), formats)):
            plot_run(Path(s["run_dir"]), formats)


def _returned(cfg, summaries: List[dict]):
    """What the job returns: the optimized metric (a float, for optimizing sweepers) or the summaries."""
    if cfg.optimized_metric is None:
        return summaries if cfg.sweep.replicas else summaries[0]
    values = []
    for s in summaries:
        v = (s.get("final") or {}).get(cfg.optimized_metric, s.get(cfg.optimized_metric))
        values.append(float(v) if isinstance(v, (int, float)) and s["status"] in ("converged", "max_steps") else math.inf)
    return sum(values) / len(values)


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig):
    from .job.ranks import end_launched_jobs, launched_ranks

    # the tasks of hydra/launcher=slurm each run this job function: rank 0 runs the job, the others follow it
    ranks = None if _RANKS else launched_ranks()
    if ranks is None:
        return run(cfg)
    if ranks.rank > 0:
        from .job.follow import follow

        return follow(ranks)
    try:
        return run(cfg)
    finally:
        end_launched_jobs(ranks)


def main() -> None:
    """cotresnet-train: refuses a configuration Hydra cannot compose with one line (exit 2); a signal
    ends a job or a sweep with its files written and exit 128 + signal."""
    from hydra._internal.utils import get_args_parser

    from .job.resume import Interrupted, interrupt_between_jobs

    register_resolvers()
    args, _ = get_args_parser().parse_known_args()
    if not (args.shell_completion or args.help or args.hydra_help or args.info or args.cfg):
        refuse_composition_errors()
    interrupt_between_jobs()
    ranks = _serve_launched_ranks()
    try:
        _hydra_main()
    except (Interrupted, KeyboardInterrupt) as e:
        code = getattr(e, "code", 130)
        _end_sweep(" (interrupted: nothing more is launched)")
        print(f"cotresnet: interrupted (exit {code})", file=sys.stderr)
        sys.exit(code)
    finally:
        if ranks is not None:
            from .job.ranks import end_launched_jobs

            end_launched_jobs(ranks)


def _serve_launched_ranks():
    """Under torchrun or srun every rank runs this command: rank 0 goes on into Hydra (one run or a sweep) and
    returns its place; the others follow its jobs (job.follow) and exit. None when no launcher started ranks."""
    from .job.ranks import launched_ranks

    ranks = launched_ranks()
    if ranks is None:
        return None
    if ranks.rank > 0:
        from .job.follow import follow

        sys.exit(1 if follow(ranks) else 0)
    _RANKS["ranks"] = ranks
    return ranks


if __name__ == "__main__":
    # `python -m cotresnet.train`: run the package module's main, whose globals the Hydra callbacks share
    from cotresnet.train import main as package_main

    package_main()
