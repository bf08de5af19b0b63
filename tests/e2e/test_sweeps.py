"""Sweeps end to end through the command line: grid, vectorized, Optuna, the report of a sweep."""
import glob
import json
import math
import sys

import pandas as pd
import pytest
import yaml
from wandb_offline import wandb_run

from cotresnet.report.cli import report
from cotresnet.report.sweep import collect, count_statuses
from helpers import TRAIN, cli

TINY = ["model.L=3", "data.n_train=16", "data.n_test=8", "trainer.max_steps=20",
        "callbacks.kernel_every=10", "callbacks.ot_every=10"]


def sweep(tmp_path, name, extra):
    out = tmp_path / name
    r = cli(TRAIN + ["-m", "model.M=4,8", "init.scale_u=0.5,1.0", "logger=[csv,wandb]", *TINY,
                     f"hydra.sweep.dir={out}", *extra], cwd=tmp_path, env={"WANDB_SILENT": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out


REPLICA_BASE = ["trainer.max_steps=40", "callbacks.kernel_every=20", "callbacks.ot_every=20", "trainer.log_every=5",
        "model.dtype=float64"]


@pytest.mark.slow
def test_hydra_optuna_sweeper_runs_a_tiny_search(tmp_path):
    sweep = tmp_path / "optuna"
    r = cli(TRAIN + ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.flow_time=1.0", "model.L=2",
                     "model.M=8", "data.n_train=16", "data.n_test=8", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and math.isfinite(best["best_value"])
    assert len([p for p in sweep.iterdir() if (p / "summary.json").is_file()]) == 3
    assert json.loads((sweep / "sweep_plan.json").read_text())["runs"] == 3  # n_trials: the monitor's total


@pytest.mark.slow
def test_vectorized_sweep_is_indistinguishable_to_the_report(tmp_path):
    args = ["-m", "seed=0,1", "init.scale_u=0.5,1.0", "model.L=3", "data.n_train=24", "data.n_test=8", *REPLICA_BASE,
            "model.M=4,8"]
    r1 = cli(TRAIN + args + [f"hydra.sweep.dir={tmp_path / 'seq'}"], cwd=tmp_path)
    r2 = cli(TRAIN + args + ["sweep.vectorize=[seed,init.scale_u]", f"hydra.sweep.dir={tmp_path / 'vec'}"],
             cwd=tmp_path)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr[-2000:], r2.stderr[-2000:])
    assert "8 runs: 8 finished" in r1.stdout and "8 runs in 2 jobs: 8 finished" in r2.stdout
    assert "sweep vec: 0/8 runs done" in r2.stderr  # the monitor counts runs against the plan from the start
    assert json.loads((tmp_path / "vec" / "sweep_plan.json").read_text()) == {"sweeper": "grid",
                                                                              "runs": 8, "jobs": 2, "bound": False}
    assert r2.stdout.count("sweep.replicas=") == 2  # two jobs launched, four replicas each
    key = ["sweep.model.M", "sweep.seed", "sweep.init.scale_u"]
    seq = collect(tmp_path / "seq").sort_values(key).reset_index(drop=True)
    vec = collect(tmp_path / "vec").sort_values(key).reset_index(drop=True)
    assert len(seq) == len(vec) == 8
    for col in ("risk_train", "risk_test", "min_pl_ratio", "lambda_min_tangent_init", "cot_dist_init"):
        pd.testing.assert_series_equal(seq[col], vec[col], rtol=1e-8)
    replica_dirs = sorted((tmp_path / "vec").glob("*/seed=*"))
    assert len(replica_dirs) == 8
    for d in replica_dirs:
        assert json.loads((d / "summary.json").read_text())["seed"] == int(d.name.split(",")[0].split("=")[1])


@pytest.mark.slow
def test_pl_phase_diagram_runs_with_one_command(tmp_path):
    out = tmp_path / "pd"
    r = cli(TRAIN + ["experiment=pl_phase_diagram", "trainer.max_steps=5", f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "9 runs: 9 finished" in r.stdout
    df = report(out)["table"]
    assert len(df) == 9 and set(df["sweep.model.M"]) == {8, 32, 128}


@pytest.mark.slow
def test_report_counts_runs_and_survives_killed_and_corrupt_runs(tmp_path):
    out = sweep(tmp_path, "r", [])
    r = report(out)
    df = r["table"]
    assert len(df) == 4 and df["job"].is_unique and set(df["status"]) <= {"max_steps", "converged"}
    assert set(r["swept"]) == {"model.M", "init.scale_u"}
    assert {p.name for p in r["figures"]} == {"metrics.png", "heatmaps.png", "risk_curves.png"}
    assert all(p.stat().st_size > 1000 for p in r["figures"]) and r["html"].is_file()
    assert len(pd.read_parquet(out / "report" / "report.parquet")) == 4
    jobs = sorted(p for p in out.iterdir() if (p / ".hydra").is_dir())
    (jobs[1] / "summary.json").unlink()  # killed halfway: metrics but no summary
    (jobs[2] / "summary.json").write_text('{"status": "max_st')  # torn by a non-atomic writer
    df = collect(out)
    assert len(df) == 4
    assert sorted(df["status"]) == sorted(["corrupt", "incomplete", df["status"][0], df["status"][3]])
    line = count_statuses(out)
    assert line.startswith(f"sweep {out.name}: 4 runs: 2 finished")
    assert jobs[2].name in line and jobs[1].name in line
    r = cli([sys.executable, "-m", "cotresnet.report", str(out)], cwd=tmp_path)
    assert r.returncode == 0 and "4 runs" in r.stdout, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=parallel"]], ids=["basic", "joblib"])
def test_2x2_multirun_gives_4_run_directories_and_4_wandb_runs(tmp_path, launcher):
    out = sweep(tmp_path, "s", launcher)
    jobs = sorted(p for p in out.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    assert len(jobs) == 4
    seen_ids, combos = set(), set()
    for job in jobs:
        assert json.loads((job / "summary.json").read_text())["status"] in ("max_steps", "converged")
        assert len(glob.glob(str(job / "wandb" / "offline-run-*"))) == 1, job  # one run, in the job's directory
        run = wandb_run(job)
        job_cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        M, su = run["config"]["model.M"], run["config"]["init.scale_u"]
        assert (M, su) == (job_cfg["model"]["M"], job_cfg["init"]["scale_u"])
        assert run["group"] == out.name and run["history"]
        combos.add((M, su))
        seen_ids.add(run["id"])
    assert len(seen_ids) == 4 and combos == {(4, 0.5), (4, 1.0), (8, 0.5), (8, 1.0)}


COUNT_COMPOSITIONS = """
import sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
load, calls = ConfigLoaderImpl.load_sweep_config, []
def counted(self, master_config, sweep_overrides):
    calls.append(tuple(sweep_overrides))
    return load(self, master_config, sweep_overrides)
ConfigLoaderImpl.load_sweep_config = counted
sys.argv = ["cotresnet-train", *sys.argv[1:]]
from cotresnet.train import main
try:
    main()
finally:
    print("COMPOSED", len(calls), len(set(calls)))
"""


@pytest.mark.parametrize("sweeper", [[], ["sweep.vectorize=[seed]"]], ids=["grid", "vectorized"])
def test_a_grid_sweep_composes_each_job_once(tmp_path, sweeper):
    """cotresnet's checks compose every job before launching any; its sweepers hand those configurations to the
    launcher instead of composing each job twice more (Hydra's validation, the launcher); the jobs run as
    composed."""
    out = tmp_path / "s"
    r = cli([sys.executable, "-c", COUNT_COMPOSITIONS, "-m", "seed=0,1", "model.M=4,8", "debug=fast",
             f"hydra.sweep.dir={out}", *sweeper], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = 2 if sweeper else 4
    assert r.stdout.split("COMPOSED")[1].split() == [str(jobs)] * 2  # calls, distinct jobs
    runs = sorted(out.glob("**/summary.json"))
    assert len(runs) == 4
    for summary in runs:
        cfg = yaml.safe_load((summary.parent / ".hydra" / "config.yaml").read_text())
        assert f"seed={cfg['seed']}" in str(summary.parent) and f"model.M={cfg['model']['M']}" in str(summary.parent)
