"""The threshold search through the command line: experiments, joblib, rerun, SLURM."""
import json
from pathlib import Path

import pandas as pd
import pytest
from slurm_local import SlurmCluster, available

from cotresnet.report.sweep import collect
from helpers import TRAIN, cli, threshold_tables

TEACHER_SEARCH = ["experiment=width_threshold", "data.n_train=16", "trainer.max_steps=150", "hydra.sweeper.lo=2",
         "hydra.sweeper.hi=16", "hydra.sweeper.ratio=3", "hydra.sweeper.seeds=[0,1]"]


def check_teacher_search(out: Path, stdout: str) -> pd.DataFrame:
    """A real search's tables agree with its run directories: one job of 2 replicas per point, each
    seed's verdict is the report's reached_1e-3 of that replica."""
    b = pd.read_csv(out / "threshold_brackets.csv", dtype={"combination": str})
    points, outcomes = threshold_tables(out)
    assert list(b.combination) == ["all"] and b.jobs.sum() == len(points) and len(outcomes) == 2 * len(points)
    rows = collect(out).set_index("path")
    for o in outcomes.itertuples():
        row = rows.loc[str(out / o.job / f"seed={o.seed}")]
        assert (row["sweep.model.M"], row["sweep.data.n_train"], row["sweep.seed"]) == (o.value, 16, o.seed)
        assert bool(row["reached_1e-3"]) == o.success and row["status"] == o.status
    assert "threshold search model.M: 1 combination(s)" in stdout
    return b


def test_experiment_sets_the_sweeper_by_value_and_its_types_are_checked(tmp_path):
    r = cli(TRAIN + ["experiment=width_threshold", "hydra.sweeper.ratio=abc", f"hydra.sweep.dir={tmp_path / 's'}"],
            cwd=tmp_path)
    assert r.returncode == 2 and "hydra.sweeper.ratio" in r.stderr and not (tmp_path / "s").exists(), r.stderr


@pytest.mark.slow  # the joblib process boundary: ~18 s
def test_teacher_search_end_to_end_under_joblib_and_rerun_launches_nothing(tmp_path):
    out = tmp_path / "s"
    r = cli(TRAIN + [*TEACHER_SEARCH, f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    b = check_teacher_search(out, r.stdout)
    assert r.stdout.count("Joblib.Parallel") == b.rounds.max()  # one launch per round
    summaries = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert len(summaries) == 2 * b.jobs.sum()
    plan = json.loads((out / "sweep_plan.json").read_text())  # the monitor's total: a bound on the search
    assert plan["sweeper"] == "threshold" and plan["bound"] and plan["runs"] >= len(summaries)
    again = cli(TRAIN + [*TEACHER_SEARCH, f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert again.returncode == 0 and "threshold search round" not in again.stdout, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == summaries
    pd.testing.assert_frame_equal(pd.read_csv(out / "threshold_brackets.csv", dtype={"combination": str}), b)


@pytest.mark.slow
@pytest.mark.skipif(bool(available()), reason=f"SLURM {available()}")
def test_teacher_search_on_the_local_slurm_cluster(tmp_path):
    out = tmp_path / "s"
    with SlurmCluster(tmp_path / "slurm") as cluster:
        r = cli(TRAIN + [*TEACHER_SEARCH, "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                         "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={out}"], cwd=tmp_path, env=cluster.env)
    assert cluster.leftovers() == []
    assert r.returncode == 0, r.stderr[-3000:]
    b = check_teacher_search(out, r.stdout)
    assert len(list((out / ".submitit").iterdir())) >= b.jobs.sum()  # every job went through sbatch
