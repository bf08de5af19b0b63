"""Bad input is refused before any file, in one line naming the key or the file, whatever its example
(issue 22, items 8-16: each class with two examples or more)."""
import logging
from pathlib import Path

import pytest
from hydra import initialize_config_dir

from cotresnet.config.compose import CONF_DIR, compose_config
from cotresnet.errors import ConfigError
from cotresnet.job import threads
from cotresnet.job.checks import check_job
from cotresnet.rundir.contract import NAME_BYTES, safe_dirname
from cotresnet.sweeps.expand import sweep_jobs
from helpers import SMALL, train_small


def jobs_of(tmp_path, *overrides):
    """The jobs of `cotresnet-train -m SMALL overrides` and their sweep directory, under paths.root=tmp_path."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        cfg = loader.load_configuration("train", [*SMALL, f"paths.root={tmp_path}", *overrides], RunMode.MULTIRUN)
        sweep = Path(str(cfg.hydra.sweep.dir))  # resolved first, as Hydra does: the jobs share its ${uid:}
        return list(sweep_jobs(cfg)), sweep


@pytest.mark.parametrize("overrides", [
    ["data.name=file", "data.path=../../x.pt,/tmp/../../etc/y.pt"],  # values with path separators
    ["init.scale_u=0.30000000000000004,0.1"],  # 16-digit floats
    [f"tags=[{','.join(f't{i}' for i in range(40))}]", "model.M=4,8"] +  # excluded from names, but long
    [f"+trainer.extra.{k}={v}" for k, v in [("detect_anomaly", "false"), ("benchmark", "false")]],
    ["model.M=4,8", "init.scale_u=0.5", "init.scale_w=0.5", "init.scale_b=0.5", "optim.dt=0.05", "seed=3",
     "data.seed=2", "data.n_train=24", "data.n_test=8", "model.d=8", "data.teacher.scale=1.5",
     "data.teacher.noise=0.01", "trainer.max_steps=5", "trainer.log_every=1", "trainer.converge_ratio=0",
     "callbacks.kernel_every=0", "callbacks.ot_every=0", "model.L=3", "model.activation=tanh", "init.scheme=iid"],
])
def test_job_directories_are_safe_bounded_names_inside_their_sweep(tmp_path, overrides):
    jobs, sweep = jobs_of(tmp_path, *overrides)
    assert len(jobs) == 2
    for _, _, job_dir in jobs:
        name = job_dir.name
        assert job_dir.parent == sweep and job_dir.resolve().is_relative_to(sweep.resolve())
        assert len(name.encode()) <= NAME_BYTES + 8 and "/" not in name and name not in (".", "..")
        assert "0000000000" not in name  # floats rounded
    assert sweep.resolve().is_relative_to(tmp_path.resolve())


def test_safe_names_keep_distinct_overrides_distinct():
    names = {safe_dirname(t) for t in ["data.path=a/b.pt", "data.path=a_b.pt", "data.path=a:b.pt", "x=" + "a" * 400,
                                       "x=" + "a" * 401, "init.scale_u=0.1234567", "init.scale_u=0.1234568"]}
    assert len(names) == 7 and all(len(n.encode()) <= NAME_BYTES for n in names)
    assert safe_dirname("init.scale_u=0.1234567").startswith("init.scale_u=0.123457_")  # rounded, then told apart


@pytest.mark.parametrize("requested, cpus, expected", [(10000, 2, 2), (3, 2, 2), (64, 8, 8), (2, 4, 2)])
def test_thread_counts_are_bounded_by_the_cpus_the_process_may_use(monkeypatch, caplog, requested, cpus, expected):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    with caplog.at_level(logging.WARNING, logger="cotresnet"):
        assert threads.configure(requested, 256, 128, 8) == expected == torch.get_num_threads()
    torch.set_num_threads(before)
    assert (f"trainer.threads={requested} lowered to {cpus}" in caplog.text) == (requested > cpus)


@pytest.mark.parametrize("make", ["file", "dangling_link", "long_component", "file_in_the_path"])
def test_a_run_directory_that_cannot_hold_a_run_is_refused(tmp_path, make):
    run = tmp_path / "run"
    if make == "file":
        run.write_text("x")
    elif make == "dangling_link":
        run.symlink_to(tmp_path / "nowhere")
    elif make == "long_component":
        run = tmp_path / ("r" * 300)
    else:
        (tmp_path / "f").write_text("")
        run = tmp_path / "f" / "run"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match="run directory .*(not a directory|link to nothing|bytes, over the 255)"):
        check_job(compose_config(SMALL), run)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_read_only_finished_run_is_reported_done_and_another_run_there_is_refused(tmp_path, monkeypatch):
    """Permissions do not stop root (CI runs as root), so a read-only directory is what os.open and os.access
    report: a lock that cannot be created, and no write access."""
    from cotresnet.job import checks
    from cotresnet.rundir.ownership import RunLock

    summary, run = train_small(tmp_path / "run", "trainer.max_steps=3")
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def read_only(self):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(RunLock, "acquire", read_only)
    monkeypatch.setattr(checks.os, "access", lambda path, mode: False)
    again, _ = train_small(run, "trainer.max_steps=3", action="done")
    assert again == summary and {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files
    for overrides in (["trainer.max_steps=6"], ["trainer.max_steps=3", "resume=never"]):  # they would write
        with pytest.raises(ConfigError, match="is not writable, and the job would (resume|restart)"):
            train_small(run, *overrides)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_a_rerun_draws_the_figures_an_interrupted_job_did_not_and_removes_its_stale_temporaries(tmp_path):
    summary, run = train_small(tmp_path / "run", "trainer.max_steps=3", "plots=[png]")
    (run / "plots" / "run.png").unlink()  # killed while drawing
    stale = [run / "checkpoints" / ".last.ckpt.k3j2h1g0.tmp", run / ".summary.json.a8b7c6d5.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    train_small(run, "trainer.max_steps=3", "plots=[png]", action="done")
    assert (run / "plots" / "run.png").is_file()
    train_small(run, "trainer.max_steps=4", "plots=[png]", action="resume")  # a job that owns the directory
    assert not any(p.exists() for p in stale)


def test_a_vectorized_rerun_with_one_replica_changed_names_that_replica_alone(tmp_path):
    train_small(tmp_path / "job", "trainer.max_steps=2", "sweep.replicas=['seed=1','seed=2','seed=3']")
    for replicas, expected in (("['seed=1','seed=2','seed=4']", "sweep.replicas[2]: seed: 3 -> 4"),
                               ("['seed=1','seed=5','seed=3']", "sweep.replicas[1]: seed: 2 -> 5")):
        with pytest.raises(ConfigError) as e:
            train_small(tmp_path / "job", "trainer.max_steps=2", f"sweep.replicas={replicas}")
        assert expected in str(e.value) and len(str(e.value)) < 400, str(e.value)


def test_a_sweep_names_every_bad_job_whatever_refuses_it(tmp_path):
    """A value Hydra cannot compose (model.M=abc) and one a check refuses (model.L=0) are each named, one line
    per bad job, before anything is launched; sweep.vectorize under Hydra's own sweeper is refused."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from cotresnet.sweeps.checks import check_grid

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        cfg = loader.load_configuration("train", [*SMALL, f"paths.root={tmp_path}", "model.L=3,0", "model.M=4,abc"],
                                        RunMode.MULTIRUN)
        with pytest.raises(ConfigError) as refused:
            check_grid(cfg)
        lines = str(refused.value).splitlines()
        assert lines[0] == "3 sweep job(s) refused, nothing launched:" and len(lines) == 4
        assert sum("model.M=abc" in line for line in lines) == 2 and sum("model.L=0 is out of range" in line
                                                                         for line in lines) == 1
        cfg = loader.load_configuration("train", [*SMALL, f"paths.root={tmp_path}", "seed=0,1", "sweep.vectorize=[seed]",
                                                  "hydra/sweeper=basic"], RunMode.MULTIRUN)
        with pytest.raises(ConfigError, match="needs cotresnet's sweeper"):
            check_grid(cfg)
    assert not any(tmp_path.iterdir())


def test_a_sweep_directory_holds_one_sweep(tmp_path):
    """Another sweep's job 0 in the directory (seed added to a sweep that had none) is refused before anything
    is launched; the same sweep grown by more values of its keys is not."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from cotresnet.sweeps.checks import check_grid

    sweep = tmp_path / "s"
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def check(*overrides):
            return check_grid(loader.load_configuration("train", [*SMALL, f"hydra.sweep.dir={sweep}", *overrides],
                                                        RunMode.MULTIRUN))

        (first,) = check("model.M=4")[0]
        first.mkdir(parents=True)  # the first sweep's job 0
        with pytest.raises(ConfigError, match=f"{first.name} is job 0 of another sweep"):
            check("model.M=4", "seed=1")
        checked, plans = check("model.M=4,8")
    assert len(checked) == 2 and [p.name for p in sweep.iterdir()] == [first.name]
