"""Signals end a job or a sweep cleanly: the step finishes, a checkpoint and an `interrupted` summary are
written, the exit status is 128 + the signal, and a rerun continues to the uninterrupted run's bits."""
import json
import signal
import subprocess
import time

import pytest
import torch

from helpers import SMALL, TRAIN, job_env, read_particles, train_small

LONG = [*SMALL, "trainer.max_steps=4000", "trainer.log_every=1", "callbacks.kernel_every=1000",
        "callbacks.ot_every=1000", "trainer.converge_ratio=0", "model.dtype=float64"]


def start(args, cwd):
    return subprocess.Popen(TRAIN + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=job_env())


def wait_for_rows(metrics, rows, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") > rows:
            return
        time.sleep(0.02)
    tail = proc.stderr.read()[-1500:] if proc.poll() is not None else ""
    raise AssertionError(f"{metrics} never reached {rows} rows: {proc.poll()} {tail}")


@pytest.mark.slow  # a subprocess killed and rerun: ~10 s each
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_a_run_after_its_step_and_a_rerun_continues_it_exactly(tmp_path, sig, code):
    run = tmp_path / "run"
    proc = start([*LONG, f"hydra.run.dir={run}"], tmp_path)
    wait_for_rows(run / "metrics.csv", 40, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 40 <= summary["steps"] < 4000
    assert (run / "checkpoints" / "last.ckpt").is_file()
    if sig == signal.SIGTERM:  # the rerun resumes from the interruption's checkpoint to the same bits
        overrides = [o for o in LONG if o not in SMALL] + ["trainer.max_steps=400"]
        train_small(run, *overrides, action="resume")
        _, ref = train_small(tmp_path / "ref", *overrides)
        for k in "uwb":
            assert torch.equal(read_particles(run)["final"][k], read_particles(ref)["final"][k])


@pytest.mark.slow
def test_a_signal_stops_a_sweep_which_launches_nothing_more(tmp_path):
    sweep = tmp_path / "sweep"
    proc = start(["-m", *LONG, "seed=0,1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    deadline = time.time() + 120
    while not list(sweep.glob("0_*/metrics.csv")) and time.time() < deadline:
        time.sleep(0.05)
    wait_for_rows(next(sweep.glob("0_*/metrics.csv")), 20, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "interrupted: nothing more is launched" in out and ": 1 run: " in out and "; 3 planned" in out
    assert not list(sweep.glob("1_*")) and not list(sweep.glob("2_*"))
    assert json.loads(next(sweep.glob("0_*/summary.json")).read_text())["status"] == "interrupted"
