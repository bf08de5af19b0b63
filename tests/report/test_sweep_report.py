"""Sweeps: multirun directories and wandb runs per job, every named experiment, the sweep report."""

import pytest

from cotresnet.config.compose import compose_config
from cotresnet.job.checks import check_job
from cotresnet.job.fit import JobContext, fit
from cotresnet.sweeps.expand import sweep_jobs
from helpers import ROOT, grid_experiments

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))




@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_runs_a_few_steps(tmp_path, name):
    cfg = compose_config([f"experiment={name}", "trainer.max_steps=3"])
    assert cfg.name == name
    (summary,) = fit(check_job(cfg, tmp_path), JobContext())
    assert summary["steps"] >= 1 and (tmp_path / "metrics.csv").is_file()


def test_every_experiment_sweep_job_passes_the_checks():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cotresnet.config.compose import CONF_DIR

    for name in grid_experiments():  # a searching sweeper chooses its jobs as it goes (test_threshold_sweep.py)
        GlobalHydra.instance().clear()
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={name}"], return_hydra_config=True)
            jobs = list(sweep_jobs(cfg))
            assert len(jobs) >= 3, name
            assert len({d for _, _, d in jobs}) == len(jobs)  # every job its own directory
            for _, job_cfg, job_dir in jobs:
                assert check_job(job_cfg, job_dir).plan.action == "new"


def test_a_sweep_rerun_with_its_values_reordered_is_refused_not_duplicated(tmp_path):
    from cotresnet.rundir.ownership import renumbered

    (tmp_path / "0_model.M=8").mkdir()
    (tmp_path / "1_model.M=16").mkdir()
    same = [(None, None, tmp_path / "0_model.M=8"), (None, None, tmp_path / "1_model.M=16"),
            (None, None, tmp_path / "2_model.M=32")]
    assert renumbered([d for _, _, d in same]) == []  # the same order, and a new value: nothing moved
    swapped = [(None, None, tmp_path / "0_model.M=16"), (None, None, tmp_path / "1_model.M=8")]
    assert renumbered([d for _, _, d in swapped]) == [(tmp_path / "0_model.M=16", tmp_path / "1_model.M=16"),
                                    (tmp_path / "1_model.M=8", tmp_path / "0_model.M=8")]
