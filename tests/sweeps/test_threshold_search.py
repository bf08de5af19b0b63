"""The threshold-search sweeper (hydra/sweeper=threshold) driven through Hydra: with a synthetic task
whose seeds succeed by a known rule (exact thresholds, round counts, failures, resume, refusals),
then end to end on the teacher task through the joblib launcher and (slow) a local SLURM cluster."""
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from cotresnet.config.compose import CONF_DIR
from cotresnet.job.checks import check_job
from cotresnet.job.resume import Interrupted
from cotresnet.rundir.contract import IDENTITY, safe_dirname, write_json, write_summary
from helpers import threshold_tables

SWEEPER = ["hydra/sweeper=threshold", "hydra.sweeper.key=model.M", "hydra.sweeper.lo=4", "hydra.sweeper.hi=512"]


class Synthetic:
    """A task function: seed s of a job succeeds when rule(cfg, s) says 'converged' (else the status it
    returns: max_steps, diverged; 'raise' makes the whole job raise). It records the job directories it
    is called in and those it 'trains'; a directory already holding its result is reported without
    training, as cotresnet reports a finished run. `stop_after` calls: it raises Interrupted (a signal)."""

    def __init__(self, rule, stop_after=None):
        self.rule, self.stop_after, self.calls, self.trained = rule, stop_after, [], []

    def __call__(self, cfg):
        out = Path(HydraConfig.get().runtime.output_dir)
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise Interrupted(15)
        self.calls.append(out.name)
        if (out / "result.json").exists():
            return json.loads((out / "result.json").read_text())
        seeds = [int(r.split("=")[1]) for r in cfg.sweep.replicas] or [cfg.seed]
        statuses = [self.rule(cfg, s) for s in seeds]
        if "raise" in statuses:
            raise RuntimeError("synthetic failure")
        # a diverged run's last finite risk is small: its failure comes from the status alone
        out_ = [{"status": st, "risk_init": 1.0, "final": {"risk_train": 0.5 if st == "max_steps" else 1e-4},
                 "seed": s, "steps": cfg.trainer.max_steps, "flow_time": 1.0} for s, st in zip(seeds, statuses)]
        value = out_ if cfg.sweep.replicas else out_[0]
        (out / "result.json").write_text(json.dumps(value))
        check = check_job(cfg, out)  # what a cotresnet job leaves: identities and summaries (the store's source)
        write_json(out / IDENTITY, check.identity)
        for m, summary in zip(check.members, out_):
            write_json(m.run_dir / IDENTITY, m.identity)
            write_summary(m.run_dir, summary)
        self.trained.append(out.name)
        return value


def search(out, task, *overrides):
    """Run the threshold sweeper in this process on the training config (basic launcher, cotresnet's
    Hydra callbacks); returns the brackets table."""
    from cotresnet.train import _SWEEP

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONF_DIR, version_base="1.3", job_name="train"):
            GlobalHydra.instance().hydra.multirun("train", task, [*SWEEPER, f"hydra.sweep.dir={out}", *overrides],
                                                  with_log_configuration=False)
    finally:  # what cotresnet-train's main does when a sweep ends early: stop the progress monitor
        if "monitor" in _SWEEP:
            _SWEEP.pop("monitor").stop()
        _SWEEP.pop("dir", None)
    return pd.read_csv(out / "threshold_brackets.csv", dtype={"combination": str})


@pytest.fixture
def launches(monkeypatch):
    """The size of every launcher.launch call (patched on the class Hydra's plugin registry instantiates:
    its scanner executes plugin modules again, so the imported class may be another object)."""
    from hydra.core.plugins import Plugins

    launcher = Plugins.instance().class_name_to_class["hydra._internal.core_plugins.basic_launcher.BasicLauncher"]
    sizes, real = [], launcher.launch

    def launch(self, job_overrides, initial_job_idx):
        sizes.append(len(job_overrides))
        return real(self, job_overrides, initial_job_idx)
    monkeypatch.setattr(launcher, "launch", launch)
    return sizes


def expected_rounds(lo, hi, ratio):
    """1 round for the ends, then bisections until log(hi/lo) halves below log(ratio)."""
    return 1 + math.ceil(math.log2(math.log2(hi / lo) / math.log2(ratio)))


def test_integer_threshold_37_in_7_rounds_of_one_job_per_point(tmp_path, launches):
    task = Synthetic(lambda cfg, s: "converged" if cfg.model.M >= 37 else "max_steps")
    (b,) = search(tmp_path / "s", task).itertuples()
    assert (b.combination, b.status) == ("all", "converged") and b.lo < 37 <= b.hi and b.hi / b.lo <= 1.1
    assert b.rounds == expected_rounds(4, 512, 1.1) == 7 and launches == [2, 1, 1, 1, 1, 1, 1]
    points, outcomes = threshold_tables(tmp_path / "s")
    assert len(task.calls) == len(points) == b.jobs == 8 and len(outcomes) == 24  # 3 seeds per job
    assert sorted(points[points["round"] == 1].value) == [4, 512] and points.value.is_unique
    assert b.jobs / b.grid_jobs <= 0.25 and b.grid_jobs == 52  # 4 * 1.1^k up to 512
    for job in task.calls:  # one directory per point, named by its values
        assert f"model.M={points.set_index('job').value[job]}" in job
    assert (tmp_path / "s" / "report" / "threshold_phase_diagram.png").stat().st_size > 1000


def test_float_key_with_a_boundary_below_one_job_per_seed(tmp_path, launches):
    task = Synthetic(lambda cfg, s: "converged" if cfg.init.scale_u <= 0.73 else "max_steps")
    (b,) = search(tmp_path / "s", task, "hydra.sweeper.key=init.scale_u", "hydra.sweeper.lo=0.01",
                  "hydra.sweeper.hi=10", "hydra.sweeper.direction=below", "hydra.sweeper.ratio=1.2",
                  "hydra.sweeper.seeds=[0,1]", "hydra.sweeper.replicas=false").itertuples()
    assert b.status == "converged" and b.lo <= 0.73 < b.hi and b.hi / b.lo <= 1.2
    assert b.rounds == expected_rounds(0.01, 10, 1.2) == 7 and b.points == 8
    assert len(task.calls) == b.jobs == 16 and launches == [4] + [2] * 6  # a job per seed
    _, outcomes = threshold_tables(tmp_path / "s")
    assert all(safe_dirname(f"init.scale_u={v:.10g},seed={s}") in j
               for v, s, j in zip(outcomes.value, outcomes.seed, outcomes.job))


def test_seed_dependent_boundaries_per_combination(tmp_path, launches):
    t = 40 * np.exp([-0.4, -0.2, 0.0, 0.2, 0.4])  # seed k succeeds iff M >= t[k] (N / 16)^0.5: median 40 (N/16)^0.5
    task = Synthetic(lambda cfg, s: "converged" if cfg.model.M >= t[s] * (cfg.data.n_train / 16) ** 0.5 else "max_steps")
    b = search(tmp_path / "s", task, "data.n_train=16,64,256", "hydra.sweeper.seeds=[0,1,2,3,4]")
    median = 40 * (b.combination.str.split("=").str[1].astype(int) / 16) ** 0.5
    assert list(b.combination) == ["data.n_train=16", "data.n_train=64", "data.n_train=256"]
    assert (b.status == "converged").all() and ((b.lo < median) & (median <= b.hi)).all()
    points, outcomes = threshold_tables(tmp_path / "s")
    assert len(task.calls) == len(points) == len(outcomes) / 5 == b.jobs.sum()  # a job of 5 replicas per point
    rounds = range(1, b.rounds.max() + 1)  # one launch per round, holding every unfinished combination
    assert launches == [(points["round"] == r).sum() for r in rounds]
    for r in rounds:
        assert set(points[points["round"] == r].combination) == set(b[b.rounds >= r].combination)
    assert ((b.logistic_lo < median) & (median < b.logistic_hi)).all()  # the fit's interval, 5 seeds per point
    scaling = pd.read_csv(tmp_path / "s" / "report" / "threshold_scaling.csv")
    assert scaling.alpha_lo.item() < 0.5 < scaling.alpha_hi.item()


def test_diverged_and_failed_jobs_count_as_failures(tmp_path):
    def rule(cfg, s):  # seed 2 diverges everywhere (with a tiny risk); jobs below M = 20 raise
        return "raise" if cfg.model.M < 20 else "diverged" if s == 2 else "converged" if cfg.model.M >= 37 else "max_steps"
    (b,) = search(tmp_path / "s", Synthetic(rule)).itertuples()
    assert b.status == "converged" and b.lo < 37 <= b.hi  # 2 of 3 seeds still reach the criterion
    _, outcomes = threshold_tables(tmp_path / "s")
    assert not outcomes[outcomes.status.isin(["diverged", "failed"])].success.any()
    assert set(outcomes[outcomes.value < 20].status) == {"failed"} and (outcomes[outcomes.seed == 2].value >= 20).any()
    (c,) = search(tmp_path / "t", Synthetic(rule), "hydra.sweeper.fraction=1.0", "hydra.sweeper.max_expansions=1").itertuples()
    assert c.status == "unbracketed"  # every seed must succeed: seed 2 never does


def test_interrupted_search_resumes_without_rerunning_finished_jobs(tmp_path):
    rule = lambda cfg, s: "converged" if cfg.model.M >= 37 * (cfg.data.n_train / 16) else "max_steps"  # noqa: E731
    args = ["data.n_train=16,64", "hydra.sweeper.ratio=2"]
    full = Synthetic(rule)
    want = search(tmp_path / "full", full, *args)
    first = Synthetic(rule, stop_after=7)  # rounds of 4, 2, 2, ... jobs: stops inside round 3
    with pytest.raises(Interrupted):
        search(tmp_path / "s", first, *args)
    _, stored = threshold_tables(tmp_path / "s")
    assert stored.job_num.max() == 5  # rounds 1 and 2 are recorded, round 3 is not
    second = Synthetic(rule)
    got = search(tmp_path / "s", second, *args)
    pd.testing.assert_frame_equal(got, want)
    assert len(second.calls) == len(full.calls) - 6  # the recorded rounds launch nothing
    assert second.calls[0] == first.calls[6] and second.calls[0] not in second.trained  # done: not trained again
    assert sorted(first.trained + second.trained) == sorted(full.calls)  # every job trained exactly once
    with pytest.raises(SystemExit) as e:  # the same directory with another criterion is refused
        search(tmp_path / "s", Synthetic(rule), *args, "hydra.sweeper.criterion.value=0.01")
    assert e.value.code == 2


@pytest.mark.parametrize("override, field", [
    ("hydra.sweeper.direction=up", "hydra.sweeper.direction='up'"),
    ("hydra.sweeper.ratio=1.0", "hydra.sweeper.ratio=1.0"),
    ("hydra.sweeper.seeds=[]", "hydra.sweeper.seeds=[]"),
    ("hydra.sweeper.fraction=0", "hydra.sweeper.fraction=0.0"),
    ("hydra.sweeper.lo=600", "hydra.sweeper.lo=600.0"),
    ("hydra.sweeper.key=model.activation", "hydra.sweeper.key='model.activation'"),
    ("hydra.sweeper.criterion.op=lt", "hydra.sweeper.criterion.op='lt'"),
    ("hydra.sweeper.criterion.metric=risk", "hydra.sweeper.criterion.metric='risk'"),
    ("model.M=8,16", "model.M is hydra.sweeper.key"),
    ("seed=0,1", "sets seed itself"),
    ("data.n_train=interval(16,64)", "sweep over lists"),
    ("model.integrator=rk4", "hydra.sweeper.replicas=true"),
    ("hydra.sweeper.hi=1e12", "model.M"),  # settings that pass, a first round whose jobs cannot run
    ("data.n_train=0", "data.n_train"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, capsys, override, field):
    task = Synthetic(lambda cfg, s: "converged")
    with pytest.raises(SystemExit) as e:
        search(tmp_path / "s", task, override)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("sweep ")]
    assert e.value.code == 2 and len(err) == 1 and field in err[0], err
    assert task.calls == [] and not (tmp_path / "s").exists()




@pytest.mark.parametrize("tamper, words", [
    ("flip", "disagrees with"), ("garbage", "is not a threshold search's outcome table"),
    ("drop_column", "columns success are missing"), ("job_gone", "disagrees with"),
    ("bad_success", "not true or false"),
])
def test_a_tampered_outcome_store_is_refused_naming_the_file(tmp_path, capsys, tamper, words):
    """The store steers a resumed search: flipped verdicts gave M* = 3.64 [0.016, 10.9] for a bracket [32, 35]
    in the audit, a garbage file an internal error. It is checked against the job summaries it came from."""
    import shutil

    rule = lambda cfg, s: "converged" if cfg.model.M >= 37 else "max_steps"  # noqa: E731
    search(tmp_path / "s", Synthetic(rule))
    table = tmp_path / "s" / "threshold_outcomes.csv"
    outcomes = pd.read_csv(table)
    if tamper == "flip":
        outcomes.loc[3, "success"] = not outcomes.loc[3, "success"]
        outcomes.to_csv(table, index=False)
    elif tamper == "garbage":
        table.write_bytes(b"\x00\x01not,a\ncsv\xff")
    elif tamper == "drop_column":
        outcomes.drop(columns="success").to_csv(table, index=False)
    elif tamper == "job_gone":
        shutil.rmtree(tmp_path / "s" / outcomes.loc[outcomes.success.idxmax(), "job"])
    else:
        outcomes.astype({"success": str}).assign(success="yes").to_csv(table, index=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        search(tmp_path / "s", Synthetic(rule))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "threshold_outcomes.csv" in err and words in err, err[-600:]
