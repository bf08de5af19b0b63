"""Reliability: bad data and checkpoints refused, divergence recorded, exact resume after SIGKILL,
no torn files, sweeps that survive failing jobs."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from helpers import TRAIN, cli, job_env

RESUMABLE = ["logger=[csv,wandb]", "model.L=4", "model.M=16", "data.n_train=64", "callbacks.n_probe=32", "trainer.max_steps=400",
             "trainer.log_every=1", "checkpoint_every=7", "trainer.converge_ratio=0", "callbacks.kernel_every=50",
             "callbacks.ot_every=50"]


@pytest.mark.slow
def test_divergence_is_recorded_and_a_sweep_containing_it_finishes(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli(TRAIN + ["-m", "optim.dt=0.1,1000", "model.L=4", "model.M=16", "data.n_train=32", "callbacks.n_probe=16",
                     "trainer.max_steps=60", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert sorted(s["status"] for s in summaries.values()) == ["diverged", "max_steps"]
    (div,) = [s for s in summaries.values() if s["status"] == "diverged"]
    assert div["diverged_at"] is not None and div["final"]["step"] < div["diverged_at"]
    assert all(v is None or abs(v) < float("inf") for v in div["final"].values())
    assert "2 runs: 1 finished" in r.stdout and "1 diverged" in r.stdout
    # fail_on_divergence turns it into an error
    out = tmp_path / "strict"
    r = cli(TRAIN + [f"hydra.run.dir={out}", "optim.dt=1000", "trainer.fail_on_divergence=true", "model.L=4",
                     "model.M=16", "data.n_train=32", "callbacks.n_probe=16", "trainer.max_steps=60"], cwd=tmp_path)
    assert r.returncode != 0 and "non-finite" in r.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"
    assert "DivergenceError" in (out / "traceback.txt").read_text()


@pytest.mark.slow
def test_a_failing_job_leaves_failed_status_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    r = cli(TRAIN + ["-m", "trainer.fail_on_divergence=true", "optim.dt=0.1,1000,0.2", "model.L=3", "model.M=8",
                     "data.n_train=16", "callbacks.n_probe=8", "trainer.max_steps=30", f"hydra.sweep.dir={sweep}"],
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    statuses = {p.parent.name.split("_")[0]: json.loads(p.read_text())["status"] for p in sweep.glob("*/summary.json")}
    assert statuses == {"0": "max_steps", "1": "failed", "2": "max_steps"}
    assert (next(sweep.glob("1_*")) / "traceback.txt").is_file()
    assert "3 runs: 2 finished (0 converged), 0 diverged, 1 failed" in r.stdout


def run_until_killed(args, run_dir, at_row, cwd):
    # its own process group: the kill takes the job's helpers (wandb's service) too, as SLURM would
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=job_env())
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and metrics.read_text().count("\n") > at_row:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    ref = tmp_path / "ref"
    r = cli(TRAIN + [f"hydra.run.dir={ref}", *RESUMABLE], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    want = torch.load(ref / "particles.pt", weights_only=True)
    ref_metrics = pd.read_csv(ref / "metrics.csv")
    for at in (30, 150, 290):
        run = tmp_path / f"killed{at}"
        run_until_killed(TRAIN + [f"hydra.run.dir={run}", *RESUMABLE], run, at, tmp_path)
        assert not (run / "summary.json").exists(), "killed too late"
        r = cli(TRAIN + [f"hydra.run.dir={run}", *RESUMABLE, "resume=auto"], cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        got = torch.load(run / "particles.pt", weights_only=True)
        for which in ("init", "final"):
            for k in "uwb":
                assert torch.equal(got[which][k], want[which][k]), (at, which, k)
        m = pd.read_csv(run / "metrics.csv")
        assert list(m["step"]) == list(range(401)), at
        pd.testing.assert_frame_equal(m, ref_metrics)
        # the resumed process logs into the same wandb run (same id, history continued)
        ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
        assert len(ids) == 1, ids


CRASHING_WRITER = """
import os, sys
from cotresnet.rundir import contract as rundir
os.replace = lambda *a: os._exit(9)  # the process dies after the write, before the rename
rundir.write_json(sys.argv[1], {"i": 1, "payload": list(range(20000))})
"""


def test_a_crash_between_write_and_rename_leaves_the_old_file_whole(tmp_path, monkeypatch):
    from cotresnet.rundir import contract as rundir

    target = tmp_path / "summary.json"
    rundir.write_json(target, {"i": 0})
    old = target.read_bytes()

    class Crash(BaseException):
        pass

    def crash(*args):
        raise Crash

    for where in ("replace", "fsync"):  # after the write / in the middle of it, in this process
        with monkeypatch.context() as m:
            m.setattr(os, where, crash)
            with pytest.raises(Crash):
                rundir.write_json(target, {"i": 1, "payload": list(range(20000))})
        assert target.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    # a real death between write and rename: the old file stays whole; the next write replaces it
    r = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(target)], env=job_env())
    assert r.returncode == 9 and target.read_bytes() == old
    rundir.write_json(target, {"i": 2})
    assert json.loads(target.read_text()) == {"i": 2}


def test_divergence_at_step_0_is_recorded_with_the_plots_of_what_exists(tmp_path):
    from helpers import train_small

    summary, run = train_small(tmp_path / "run", "init.scale_u=1e30", "trainer.max_steps=10", "plots=[png]")
    assert summary["status"] == "diverged" and summary["steps"] == 0 and summary["diverged_at"] == 0
    assert summary["final"] == {} and summary["risk_init"] is None
    assert (run / "plots" / "run.png").is_file() and (run / "particles.pt").is_file()
    assert pd.read_csv(run / "metrics.csv").empty
