"""A run directory belongs to one configuration: reruns complete or report it, never mix or damage it;
a kill at any step then a rerun gives the uninterrupted run's bits, in every training mode."""
import hashlib
from pathlib import Path

import pandas as pd
import pytest
import torch

from cotresnet.errors import ConfigError
from cotresnet.job.checks import check_job
from cotresnet.job.flow_callback import FlowDiagnostics
from cotresnet.rundir import contract as RD
from helpers import SHORT, read_particles, train_small


def snapshot(run: Path) -> dict:
    """Every file below a run directory: its bytes' hash and its modification time."""
    return {str(p.relative_to(run)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run.rglob("*")) if p.is_file()}


def test_rerunning_a_finished_run_is_done_and_changes_no_byte(tmp_path, small):
    first, run = train_small(tmp_path / "run", *SHORT)
    before = snapshot(run)
    again, _ = train_small(run, *SHORT, "logger=[csv,tensorboard]", "callbacks.kernel_every=3", action="done")
    assert again == first and snapshot(run) == before
    # a smaller step budget than the run already took is done too
    train_small(run, *SHORT[1:], "trainer.max_steps=5", action="done")
    assert snapshot(run) == before


@pytest.mark.parametrize("change", [["seed=1"], ["optim.dt=0.2"], ["model.activation=silu"], ["data.seed=4"],
                                    ["init.scale_u=2"], ["model.dtype=float64"], ["data.teacher.scale=1"],
                                    ["optim.batch_size=4"], ["model.integrator=rk4"], ["trainer.matmul_precision=high"],
                                    ["callbacks.n_probe=10"]])
def test_another_configuration_in_the_directory_is_refused_naming_the_keys(tmp_path, small, change):
    _, run = train_small(tmp_path / "run", *SHORT)
    before = snapshot(run)
    key = change[0].split("=")[0]
    with pytest.raises(ConfigError, match=f"another configuration: .*{key}: "):
        check_job(small(*SHORT, *change), run)
    assert snapshot(run) == before


def test_overwrite_replaces_the_old_run_whose_files_go_first(tmp_path, small):
    _, run = train_small(tmp_path / "run", *SHORT, "logger=[csv,tensorboard]")
    assert (run / "tensorboard").is_dir()
    summary, _ = train_small(run, *SHORT, "seed=3", "overwrite=true", action="restart")
    assert summary["seed"] == 3 and not (run / "tensorboard").exists()
    assert "overwrite=true" in (run / "train.log").read_text()  # this job's log, not the deleted one's
    m = pd.read_csv(run / "metrics.csv")
    assert list(m["step"]) == sorted(set(m["step"]))  # no rows of the old run


def test_foreign_outputs_are_refused_unless_overwrite(tmp_path, small):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("not ours\n")
    with pytest.raises(ConfigError, match="files of no cotresnet run \\(metrics.csv\\)"):
        check_job(small(*SHORT), run)
    (run / "identity.json").write_text("{broken")
    with pytest.raises(ConfigError, match="identity.json: not valid JSON"):
        check_job(small(*SHORT), run)
    assert check_job(small(*SHORT, "overwrite=true"), run).plan.action == "restart"


def test_a_job_stopped_before_its_identity_restarts_and_a_lone_log_is_still_foreign(tmp_path, small):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").write_text("")  # what a SIGTERM during start-up leaves, next to the lock
    with pytest.raises(ConfigError, match="files of no cotresnet run"):
        check_job(small(*SHORT), run)
    (run / ".lock").write_text("")
    assert check_job(small(*SHORT), run).plan.action == "restart"
    summary, _ = train_small(run, *SHORT, action="restart")
    assert summary["status"] in ("max_steps", "converged")


def test_raising_max_steps_continues_the_run_bit_for_bit(tmp_path):
    ref, ref_dir = train_small(tmp_path / "ref", *SHORT[1:], "trainer.max_steps=24")
    train_small(tmp_path / "run", *SHORT)
    got, run = train_small(tmp_path / "run", *SHORT[1:], "trainer.max_steps=24", action="resume")
    assert_same_run(run, ref_dir)
    assert got["steps"] == 24 and got["final"] == ref["final"]


def test_a_smaller_converge_ratio_continues_a_converged_run(tmp_path):
    first, run = train_small(tmp_path / "run", *SHORT[:-1], "trainer.converge_ratio=0.5", "trainer.max_steps=200")
    assert first["status"] == "converged" and first["steps"] < 200
    again, _ = train_small(run, *SHORT[:-1], "trainer.converge_ratio=0.2", "trainer.max_steps=200", action="resume")
    assert again["status"] == "converged" and again["steps"] > first["steps"]
    assert again["final"]["risk_train"] <= 0.2 * again["risk_init"]


def test_resume_never_and_a_run_without_checkpoint_start_again_from_step_0(tmp_path):
    _, run = train_small(tmp_path / "run", *SHORT)
    train_small(run, *SHORT, "resume=never", action="restart")
    m = pd.read_csv(run / "metrics.csv")
    assert list(m["step"]) == [0, 2, 4, 6, 8, 10, 12]
    (run / "checkpoints" / "last.ckpt").unlink()
    (run / "summary.json").unlink()  # killed before its first checkpoint
    train_small(run, *SHORT, action="restart")
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [0, 2, 4, 6, 8, 10, 12]


class Killed(BaseException):
    """What SIGKILL leaves: nothing after the step where it lands (no summary, no final row)."""


def kill_at(monkeypatch, step: int) -> None:
    original = FlowDiagnostics.on_before_optimizer_step

    def patched(self, trainer, pl_module, optimizer):
        if trainer.global_step == step:
            raise Killed
        return original(self, trainer, pl_module, optimizer)

    monkeypatch.setattr(FlowDiagnostics, "on_before_optimizer_step", patched)


def assert_same_run(run: Path, ref: Path, replicas=("",)):
    for sub in replicas:
        a, b = read_particles(run / sub), read_particles(ref / sub)
        for which in ("init", "final"):
            for k in "uwb":
                assert torch.equal(a[which][k], b[which][k]), (sub, which, k)
        m, want = pd.read_csv(run / sub / "metrics.csv"), pd.read_csv(ref / sub / "metrics.csv")
        assert list(m["step"]) == list(want["step"])  # every step once
        pd.testing.assert_frame_equal(m, want)
        pd.testing.assert_frame_equal(pd.read_csv(run / sub / "spectrum.csv"), pd.read_csv(ref / sub / "spectrum.csv"))


MODES = {
    "full_batch": [],
    "minibatch": ["optim.batch_size=5"],
    "replicas": ["sweep.replicas=['seed=0 optim.dt=0.1','seed=1 optim.dt=0.05']"],
    "float64": ["model.dtype=float64", "model.backprop=recompute"],
    "depth_mobile": ["model.depth_kernel=gaussian", "optim.geometry=wasserstein", "optim.depth_weight=5",
                     "model.integrator=euler", "model.substeps=4", "callbacks.kernel_every=0"],
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kill", [1, 7, 11])
def test_a_kill_at_any_step_then_a_rerun_gives_the_uninterrupted_bits(tmp_path, monkeypatch, mode, kill):
    args = [*SHORT, "checkpoint_every=5", *MODES[mode]]
    _, ref = train_small(tmp_path / "ref", *args)
    kill_at(monkeypatch, kill)
    with pytest.raises(Killed):
        train_small(tmp_path / "run", *args)
    monkeypatch.undo()
    replicas = ("seed=0,optim.dt=0.1", "seed=1,optim.dt=0.05") if mode == "replicas" else ("",)
    assert not any((tmp_path / "run" / r / "summary.json").exists() for r in replicas)
    train_small(tmp_path / "run", *args, action="resume" if kill > 5 else "restart")
    assert_same_run(tmp_path / "run", ref, replicas)


@pytest.mark.slow
def test_a_compiled_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    args = [*SHORT, "checkpoint_every=5", "trainer.compile=default", "callbacks.kernel_every=0", "callbacks.ot_every=0"]
    _, ref = train_small(tmp_path / "ref", *args)
    kill_at(monkeypatch, 8)
    with pytest.raises(Killed):
        train_small(tmp_path / "run", *args)
    monkeypatch.undo()
    train_small(tmp_path / "run", *args, action="resume")
    assert_same_run(tmp_path / "run", ref)


def test_vectorized_rerun_with_other_replica_values_is_refused(tmp_path, small):
    args = [*SHORT, "sweep.replicas=['seed=0','seed=1','seed=2']"]
    _, job = train_small(tmp_path / "job", *args)
    with pytest.raises(ConfigError, match="sweep.replicas"):
        check_job(small(*SHORT, "sweep.replicas=['seed=0','seed=1','seed=3']"), job)
    assert check_job(small(*args), job).plan.action == "done"


def test_changed_data_file_contents_are_another_configuration(tmp_path, small):
    path = tmp_path / "data.pt"
    make = lambda scale: torch.save({"x_train": scale * torch.ones(6, 2, dtype=torch.float64).cumsum(0),
                                     "y_train": torch.zeros(6, 1), "x_test": torch.zeros(0, 2),
                                     "y_test": torch.zeros(0, 1)}, path)
    make(1.0)
    args = [*SHORT, "data.name=file", f"data.path={path}"]
    _, run = train_small(tmp_path / "run", *args)
    make(2.0)
    with pytest.raises(ConfigError, match="data.sha256"):
        check_job(small(*args), run)






def test_a_fresh_run_logs_no_restart(tmp_path):
    _, run = train_small(tmp_path / "run", *SHORT)
    assert "restart" not in (run / "train.log").read_text()


def test_a_signal_before_the_first_step_leaves_an_interrupted_summary(tmp_path, monkeypatch):
    import cotresnet.job.fit as F

    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(F, "prepare", interrupted)  # the moment after the lock, before any training file
    with pytest.raises(KeyboardInterrupt):
        train_small(tmp_path / "run", *SHORT)
    s = RD.read_summary(tmp_path / "run")
    assert s["status"] == "interrupted" and s["steps"] == 0 and s["final"] == {}
    monkeypatch.undo()
    summary, _ = train_small(tmp_path / "run", *SHORT, action="restart")  # a rerun trains it from the start
    assert summary["steps"] == 12
