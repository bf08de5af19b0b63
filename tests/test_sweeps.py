"""Sweeps: multirun directories and wandb runs per job, every named experiment, the sweep report."""
import glob
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cotresnet.checks import check_job
from cotresnet.job import JobContext, fit
from cotresnet.report import collect, count_statuses, report
from cotresnet.train import compose_config, sweep_jobs
from helpers import TRAIN, cli, grid_experiments
from wandb_offline import wandb_run

TINY = ["model.L=3", "data.n_train=16", "data.n_test=8", "trainer.max_steps=20",
        "callbacks.kernel_every=10", "callbacks.ot_every=10"]
EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "experiment").glob("*.yaml"))


def sweep(tmp_path, name, extra):
    out = tmp_path / name
    r = cli(TRAIN + ["-m", "model.M=4,8", "init.scale_u=0.5,1.0", "logger=[csv,wandb]", *TINY,
                     f"hydra.sweep.dir={out}", *extra], cwd=tmp_path, env={"WANDB_SILENT": "true"})
    assert r.returncode == 0, r.stderr[-3000:]
    return out


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


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_runs_a_few_steps(tmp_path, name):
    cfg = compose_config([f"experiment={name}", "trainer.max_steps=3"])
    assert cfg.name == name
    (summary,) = fit(check_job(cfg, tmp_path), JobContext())
    assert summary["steps"] >= 1 and (tmp_path / "metrics.csv").is_file()


def test_every_experiment_sweep_job_passes_the_checks():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from cotresnet.train import CONF_DIR

    for name in grid_experiments():  # a searching sweeper chooses its jobs as it goes (test_threshold_sweep.py)
        GlobalHydra.instance().clear()
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
            jobs = list(sweep_jobs(cfg))
            assert len(jobs) >= 3, name
            assert len({d for _, _, d in jobs}) == len(jobs)  # every job its own directory
            for _, job_cfg, job_dir in jobs:
                assert check_job(job_cfg, job_dir).plan.action == "new"


@pytest.mark.slow
def test_pl_phase_diagram_runs_with_one_command(tmp_path):
    out = tmp_path / "pd"
    r = cli(TRAIN + ["experiment=pl_phase_diagram", "trainer.max_steps=5", f"hydra.sweep.dir={out}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "9 jobs: 9 finished" in r.stdout
    df = report(out)["table"]
    assert len(df) == 9 and set(df["sweep.model.M"]) == {8, 32, 128}


@pytest.mark.slow
def test_report_counts_jobs_and_survives_killed_and_corrupt_jobs(tmp_path):
    out = sweep(tmp_path, "r", [])
    r = report(out)
    df = r["table"]
    assert len(df) == 4 and df["job"].is_unique and set(df["status"]) <= {"max_steps", "converged"}
    assert set(r["swept"]) == {"model.M", "init.scale_u"}
    names = {p.name for p in r["figures"]}
    assert any(n.startswith("heatmap_") for n in names) and any(n.startswith("risk_curves_by_") for n in names)
    assert any("_vs_model.M" in n for n in names)
    assert all(p.stat().st_size > 1000 for p in r["figures"])
    assert len(pd.read_parquet(out / "report" / "report.parquet")) == 4
    jobs = sorted(p for p in out.iterdir() if (p / ".hydra").is_dir())
    (jobs[1] / "summary.json").unlink()  # killed halfway: metrics but no summary
    (jobs[2] / "summary.json").write_text('{"status": "max_st')  # torn by a non-atomic writer
    df = collect(out)
    assert len(df) == 4
    assert sorted(df["status"]) == sorted(["corrupt", "incomplete", df["status"][0], df["status"][3]])
    line = count_statuses(out)
    assert line.startswith(f"sweep {out.name}: 4 jobs: 2 finished")
    assert jobs[2].name in line and jobs[1].name in line
    r = cli([sys.executable, "-m", "cotresnet.report", str(out)], cwd=tmp_path)
    assert r.returncode == 0 and "4 jobs" in r.stdout, r.stderr


def test_a_sweep_rerun_with_its_values_reordered_is_refused_not_duplicated(tmp_path):
    from cotresnet.ownership import renumbered

    (tmp_path / "0_model.M=8").mkdir()
    (tmp_path / "1_model.M=16").mkdir()
    same = [(None, None, tmp_path / "0_model.M=8"), (None, None, tmp_path / "1_model.M=16"),
            (None, None, tmp_path / "2_model.M=32")]
    assert renumbered([d for _, _, d in same]) == []  # the same order, and a new value: nothing moved
    swapped = [(None, None, tmp_path / "0_model.M=16"), (None, None, tmp_path / "1_model.M=8")]
    assert renumbered([d for _, _, d in swapped]) == [(tmp_path / "0_model.M=16", tmp_path / "1_model.M=16"),
                                    (tmp_path / "1_model.M=8", tmp_path / "0_model.M=8")]
