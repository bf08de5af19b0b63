"""The threshold-search sweeper's work (the Hydra plugin class is hydra_plugins/cotresnet_sweeper/
threshold.py, its settings threshold_settings.py; the algorithm is threshold.py): settings checked, rounds launched through
the configured launcher (one launch per round, every unfinished combination in it), jobs judged,
tables written to the sweep directory after every round.

Jobs. A point (combination, value) runs its seeds as one job, `sweep.replicas=['seed=0',...]` (or one
job per seed, `seed=s`, with hydra.sweeper.replicas=false), with the fixed overrides, the
combination's and `key=value`. Jobs are numbered in launch order across rounds, so a point's job
directory (hydra.sweep.subdir, `<num>_<overrides>` by default) is the same in every run of a search.

Verdicts. A seed succeeds when its run finished (converged or max_steps) and `metric op value` holds
at its end: within the job's flow time trainer.max_steps x optim.dt, the most a job trains. A job
that diverged, failed, was refused or returned nothing usable is a failure of each of its seeds;
the status is kept in the outcomes table.

Files in the sweep directory, rewritten (atomically) after every round:
  threshold_search.json    key, criterion, the jobs' configuration but for the swept keys, settings
  threshold_outcomes.csv   per (combination, value, seed): success, status, metric, job_num, job
  threshold_points.csv     per evaluated point: seeds, successes, fraction, success, round, job
  threshold_brackets.csv   per combination: bracket, status, rounds, jobs, grid_jobs, estimate

Resume: rerun the command with hydra.sweep.dir=<that directory>. The outcomes table is the search's
memory (ThresholdSearch.load replays it), so finished rounds launch nothing. The round that was
running is launched again with the same job numbers, hence directories: its finished jobs return
their summaries without training (run ownership, plan 'done'), the others resume from their
checkpoint or start again. A directory holding a search of another key, criterion or job
configuration (any key but the swept ones) is refused: its outcomes would not be this search's.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd
from omegaconf import DictConfig, OmegaConf, open_dict

from ..config.schema import SEED_MAX
from ..errors import ConfigError, run_check
from ..rundir import contract as RD
from .expand import job_dir, load_job_config, task_config
from .threshold import SearchConfig, ThresholdSearch
from .threshold_tables import SEARCH, load_outcomes, read_store, verdict, write_tables

OPS = ("<=", ">=")
METRICS = ("risk_ratio", *RD.COLUMNS[1:], *RD.SUMMARY_METRICS)
RESERVED = ("seed", "sweep.replicas", "sweep.vectorize")  # the sweeper sets the seeds itself


@dataclass
class Setup:
    """A checked search: the algorithm's config, the overrides of each combination (label -> list),
    the overrides every job gets, the criterion and the identity stored in threshold_search.json."""
    search: SearchConfig
    combos: Dict[str, List[str]]
    fixed: List[str]
    criterion: dict
    identity: dict


def _require(ok: bool, field: str, value, rule: str) -> None:
    if not ok:
        raise ConfigError(f"hydra.sweeper.{field}={value!r} is not allowed; {rule}")


def _overrides(key: str, arguments: List[str], parser) -> Tuple[Dict[str, List[str]], List[str]]:
    """(combination label -> its overrides, fixed overrides) from params and the command line; as in
    BasicSweeper, a key given twice takes its last value."""
    swept: Dict[str, List[str]] = {}
    fixed: Dict[str, str] = {}
    for o in parser.parse_overrides(arguments):
        k = o.get_key_element()
        if k.lstrip("+~") == key:
            raise ConfigError(f"{o.input_line}: {key} is hydra.sweeper.key, whose values the sweeper chooses; "
                              "remove the override and set the bracket with hydra.sweeper.lo / hydra.sweeper.hi")
        if k.lstrip("+~") in RESERVED:
            raise ConfigError(f"{o.input_line}: the threshold sweeper sets {k} itself (hydra.sweeper.seeds, "
                              "hydra.sweeper.replicas); remove the override")
        if o.is_sweep_override() and not o.is_discrete_sweep():
            raise ConfigError(f"{o.input_line}: the other keys of a threshold search sweep over lists "
                              "(a,b,c or range(...)); the searched key is hydra.sweeper.key")
        swept.pop(k, None), fixed.pop(k, None)
        if o.is_sweep_override():
            swept[k] = [f"{k}={v}" for v in o.sweep_string_iterator()]
        else:
            fixed[k] = f"{k}={o.get_value_element_as_str()}"
    combos = {",".join(c) or "all": list(c) for c in itertools.product(*swept.values())}
    return combos, list(fixed.values())


def _limits(s: dict) -> Tuple[float, float]:
    return (-math.inf if s["min_value"] is None else s["min_value"],
            math.inf if s["max_value"] is None else s["max_value"])


def _check_settings(s: dict, cfg: DictConfig) -> bool:
    """Every setting a type cannot check, before any work; returns whether the key is an integer."""
    current = OmegaConf.select(cfg, s["key"], default=None)
    _require(isinstance(current, (int, float)) and not isinstance(current, bool), "key", s["key"],
             "it must name a numeric key of the task configuration (model.M, data.n_train, init.scale_u, ...)")
    integer, log = isinstance(current, int), s["log"]
    _require(s["direction"] in ("above", "below"), "direction", s["direction"], "choose above or below")
    _require(s["lo"] < s["hi"], "lo", s["lo"], f"it must be below hydra.sweeper.hi={s['hi']!r}")
    _require(not log or s["lo"] >= (1 if integer else 0) and s["lo"] > 0, "lo", s["lo"],
             f"with hydra.sweeper.log=true it must be > 0{' and >= 1 (an integer key)' if integer else ''}")
    _require(not log or s["ratio"] > 1 + 1e-6, "ratio", s["ratio"], "it must be > 1")
    _require(log or integer or s["width"] > 0, "width", s["width"], "with hydra.sweeper.log=false it must be > 0")
    _require(s["factor"] > 1, "factor", s["factor"], "it must be > 1")
    _require(0 < s["fraction"] <= 1, "fraction", s["fraction"], "it must be in (0, 1]")
    seeds = s["seeds"]
    _require(bool(seeds) and len(set(seeds)) == len(seeds) and all(0 <= x <= SEED_MAX for x in seeds), "seeds",
             seeds, f"list at least one seed, each once, in [0, {SEED_MAX}]")
    _require(s["max_expansions"] >= 0, "max_expansions", s["max_expansions"], "it must be >= 0")
    lo_lim, hi_lim = _limits(s)
    _require(lo_lim <= s["lo"] and s["hi"] <= hi_lim, "min_value", s["min_value"],
             f"the limits [min_value, max_value] = [{lo_lim}, {hi_lim}] must contain [lo, hi] = [{s['lo']}, {s['hi']}]")
    _require(0 < s["level"] < 1, "level", s["level"], "it must be in (0, 1)")
    crit = s["criterion"]
    _require(crit["metric"] in METRICS, "criterion.metric", crit["metric"], f"choose one of {', '.join(METRICS)}")
    _require(crit["op"] in OPS, "criterion.op", crit["op"], "choose <= or >=")
    _require(math.isfinite(crit["value"]), "criterion.value", crit["value"], "it must be finite")
    if s["replicas"] and (cfg.model.integrator != "euler" or cfg.model.adjoint or cfg.optim.batch_size is not None):
        raise ConfigError("hydra.sweeper.replicas=true runs a point's seeds as replicas, which need "
                          "model.integrator=euler, model.adjoint=false and optim.batch_size=null; "
                          "set hydra.sweeper.replicas=false for one job per seed")
    if cfg.sweep.vectorize or cfg.sweep.replicas:
        raise ConfigError("sweep.vectorize / sweep.replicas are set by the configuration: the threshold sweeper "
                          "makes a point's seeds the replicas itself (hydra.sweeper.seeds); leave them empty")
    if cfg.optimized_metric is not None:
        raise ConfigError(f"optimized_metric={cfg.optimized_metric!r}: the threshold sweeper judges the jobs' "
                          "summaries (hydra.sweeper.criterion); set optimized_metric=null")
    return integer


def typed_settings(settings: dict) -> dict:
    """The sweeper's settings merged over its schema (ThresholdSweeperConf): defaults filled in, types
    and key names checked however the sweeper was configured (hydra/sweeper=threshold, or by value)."""
    from omegaconf.errors import OmegaConfBaseException

    from .threshold_settings import ThresholdSweeperConf

    try:
        merged = OmegaConf.merge(OmegaConf.structured(ThresholdSweeperConf),
                                 {k: v for k, v in settings.items() if k != "_target_"})
    except OmegaConfBaseException as e:
        raise ConfigError(f"hydra.sweeper.{e.full_key}: {str(e.msg).splitlines()[0]}") from e
    return OmegaConf.to_container(merged)


def prepare(settings: dict, config: DictConfig, arguments: List[str], loader) -> Setup:
    """Check the settings and the overrides (ConfigError names the key) and build the search. The
    identity's `task` is the jobs' configuration but for the swept keys (the fixed overrides applied)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    s = typed_settings(settings)
    params = [f"{k}={v}" for k, v in (s.get("params") or {}).items()]
    combos, fixed = _overrides(s["key"], params + list(arguments), OverridesParser.create(config_loader=loader))
    base = task_config(load_job_config(loader, config, fixed))
    integer = _check_settings(s, base)
    search = SearchConfig(s["key"], s["lo"], s["hi"], combinations=tuple(combos), integer=integer, log=s["log"],
                          direction=s["direction"], seeds=tuple(s["seeds"]), fraction=s["fraction"],
                          ratio=s["ratio"], width=s["width"], factor=s["factor"],
                          limits=_limits(s), max_expansions=s["max_expansions"], replicas=s["replicas"])
    swept = [o.split("=", 1)[0] for o in next(iter(combos.values()))]
    flat = RD.flatten(OmegaConf.to_container(base, resolve=False))
    identity = {"key": s["key"], "criterion": s["criterion"], "combination_keys": swept, "fixed": fixed,
                "task": {k: v for k, v in flat.items() if k not in (s["key"], *swept)},
                "settings": {**{k: v for k, v in s.items() if k != "params"}, "integer": integer}}
    return Setup(search, combos, fixed, s["criterion"], json.loads(json.dumps(identity, default=str)))


def _value_string(search: SearchConfig, value) -> str:
    return str(int(value)) if search.integer else f"{float(value):.10g}"


def round_jobs(setup: Setup, requests) -> List[Tuple[List[str], object, Tuple[int, ...]]]:
    """(overrides, request, seeds) of every job of a round: one per point, or one per seed."""
    jobs = []
    for r in requests:
        point = setup.fixed + setup.combos[r.combination] + [f"{setup.search.key}={_value_string(setup.search, r.value)}"]
        if setup.search.replicas:
            quoted = ",".join(f"'seed={s}'" for s in r.seeds)
            jobs.append((point + [f"sweep.replicas=[{quoted}]"], r, r.seeds))
        else:
            jobs += [(point + [f"seed={s}"], r, (s,)) for s in r.seeds]
    return jobs


def check_round(config: DictConfig, loader, overrides: List[List[str]], first_num: int) -> List[str]:
    """cotresnet's checks of every job of a round, before it is launched (a ConfigError names the job);
    returns the job directories relative to the sweep directory."""
    from ..job.checks import check_job

    names = []
    for num, job in enumerate(overrides, first_num):
        cfg = load_job_config(loader, config, job)
        with open_dict(cfg):
            cfg.hydra.job.num = cfg.hydra.job.id = num
        where = job_dir(cfg)
        try:
            check_job(task_config(cfg), where)
        except ConfigError as e:
            raise ConfigError(f"threshold search job {num} [{' '.join(job)}]: {e}") from e
        names.append(where.name)
    return names


def seed_summaries(ret, n_seeds: int) -> List[dict]:
    """A job's return as one summary per seed: cotresnet returns a list (replicas) or one summary, or
    {"status": failed|refused}; a job that raised fails each of its seeds."""
    try:
        value = ret.return_value
    except Exception as e:  # the job's own exception, re-raised by Hydra's JobReturn
        return [{"status": "failed", "error": f"{type(e).__name__}: {e}"}] * n_seeds
    if isinstance(value, dict):
        return [value] * n_seeds
    if isinstance(value, list) and len(value) == n_seeds and all(isinstance(v, dict) for v in value):
        return value
    return [{"status": "failed", "error": f"the job returned {type(value).__name__}, not {n_seeds} summaries"}] * n_seeds


def _judge_round(setup: Setup, jobs, results, names, first_num: int) -> List[dict]:
    """Outcome rows (module doc, Verdicts) of a launched round."""
    rows = []
    for k, ((_, request, seeds), ret, name) in enumerate(zip(jobs, results, names)):
        for seed, summary in zip(seeds, seed_summaries(ret, len(seeds))):
            ok, metric = verdict(summary, setup.criterion)
            rows.append(dict(combination=request.combination, value=request.value, seed=seed, success=ok,
                             status=summary.get("status", "failed"), metric=metric, job_num=first_num + k, job=name))
    return rows


def run_search(sweeper, arguments: List[str]) -> list:
    """The sweep (module doc): check everything, then rounds until every combination stopped; then the
    tables. Returns the JobReturns of every round (the plugin draws the report)."""
    config, loader = sweeper.config, sweeper.hydra_context.config_loader
    setup = run_check(prepare, sweeper.settings, config, arguments, loader)
    sweep_dir, level = Path(str(config.hydra.sweep.dir)), setup.identity["settings"]["level"]
    outcomes = run_check(read_store, sweep_dir, setup.identity, setup.search.replicas)
    search = ThresholdSearch(setup.search)
    run_check(load_outcomes, search, outcomes[outcomes.combination.isin(setup.combos)] if len(outcomes) else outcomes,
              sweep_dir)
    num, returns = (int(outcomes.job_num.max()) + 1 if len(outcomes) else 0), []
    while not search.done:
        jobs = round_jobs(setup, search.next_points())
        names = run_check(check_round, config, loader, [j[0] for j in jobs], num)
        if num == 0 or not (sweep_dir / SEARCH).exists():  # every check passed: now the search writes its files
            RD.write_json(sweep_dir / SEARCH, setup.identity)
            OmegaConf.save(config, sweep_dir / RD.MULTIRUN_YAML)
        points, seeds = search.planned_points(), len(setup.search.seeds)
        RD.write_sweep_plan(sweep_dir, "threshold", points * seeds, points * (1 if setup.search.replicas else seeds),
                            bound=True)
        results = sweeper.launcher.launch([j[0] for j in jobs], initial_job_idx=num)
        rows = _judge_round(setup, jobs, results, names, num)
        search.record(rows)
        outcomes = pd.concat([outcomes, pd.DataFrame(rows)], ignore_index=True)
        brackets = write_tables(sweep_dir, search, outcomes, level)
        print(f"threshold search round {max(r.round for _, r, _ in jobs)}: {len(jobs)} jobs; " + "; ".join(
            f"{b.combination} [{b.lo:g}, {b.hi:g}] {b.status}" for b in brackets.itertuples()), flush=True)
        num, returns = num + len(jobs), returns + [results]
    if len(outcomes):
        write_tables(sweep_dir, search, outcomes, level)
    return returns
