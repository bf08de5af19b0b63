"""One flow on two processes (gloo on this CPU): ranks that share the particles (S = 2) or split the samples
(D = 2, unequal shards) give the one-process flow to 1e-10 in float64; a rank killed mid-run, then a rerun, gives
the uninterrupted two-process run bit for bit; a sweep of two-rank jobs leaves one run directory and one wandb run
per job, with the built-in launcher and under torchrun. Subprocesses: the process boundary is what is tested."""
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from helpers import SMALL, TRAIN, cli, job_env, read_particles, train_small

pytestmark = pytest.mark.slow
# 25 samples: the data-parallel shards hold 13 and 12
RUN = [*SMALL, "data.n_train=25", "model.dtype=float64", "trainer.max_steps=12", "trainer.log_every=2",
       "callbacks.kernel_every=6", "callbacks.ot_every=6", "trainer.converge_ratio=0", "plots=[]"]
# numbers of the machine, not of the flow
NOT_FLOW = {"wall_time_s", "threads", "run_dir", "versions", "fingerprint", "tags", "seed"}


def assert_close_numbers(a, b, path="summary", rtol=1e-10):
    """Every number of two summaries (nested) agrees to rtol (with an absolute floor of rtol * 1e-3)."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            if k not in NOT_FLOW:
                assert_close_numbers(a[k], b[k], f"{path}.{k}", rtol)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_numbers(x, y, f"{path}[{i}]", rtol)
    elif isinstance(a, float) and isinstance(b, float) and math.isfinite(a):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=rtol * 1e-3), (path, a, b)
    else:
        assert a == b, (path, a, b)


def assert_same_flow(run: Path, ref: Path, rtol=1e-10):
    """Risk curve and every metric, final particles, every summary number: equal to rtol."""
    a, b = pd.read_csv(run / "metrics.csv"), pd.read_csv(ref / "metrics.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        torch.testing.assert_close(torch.tensor(a[col].to_numpy(float)), torch.tensor(b[col].to_numpy(float)),
                                   rtol=rtol, atol=rtol * 1e-3, equal_nan=True, msg=col)
    for k in "uwb":
        torch.testing.assert_close(read_particles(run)["final"][k], read_particles(ref)["final"][k], rtol=rtol,
                                   atol=rtol * 1e-3)
    assert_close_numbers(json.loads((run / "summary.json").read_text()),
                         json.loads((ref / "summary.json").read_text()), rtol=rtol)


def job_dirs(sweep: Path):
    return sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def test_two_ranks_equal_one_process(tmp_path):
    """A sweep of four two-rank jobs (each in its own process group): S = 2 and D = 2, Euler and rk4."""
    sweep = tmp_path / "sweep"
    r = cli(TRAIN + ["-m", *RUN, "model.integrator=euler,rk4", "model.substeps=2", "trainer.particle_parallel=1,2",
                     "trainer.devices=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4 and not list(tmp_path.glob("outputs"))
    for integrator in ("euler", "rk4"):
        _, ref = train_small(tmp_path / integrator, *RUN[len(SMALL):], f"model.integrator={integrator}",
                             "model.substeps=2")
        for job in jobs:
            if f"model.integrator={integrator}" in job.name:
                assert_same_flow(job, ref)
    assert "4 runs: 4 finished" in r.stdout


def _children(pid: int):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":  # a zombie of ours: it ended
            return True
        time.sleep(0.05)
    return False


LONG = [*SMALL, "model.dtype=float64", "trainer.max_steps=200", "trainer.log_every=1", "checkpoint_every=20",
        "callbacks.kernel_every=50", "callbacks.ot_every=50", "trainer.converge_ratio=0", "plots=[]",
        "trainer.devices=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted two-rank run of a layout (made once per layout)."""
    runs = {}

    def run(layout):
        if layout not in runs:
            ref = tmp_path_factory.mktemp("ref") / "run"
            r = cli(TRAIN + [*LONG, layout, f"hydra.run.dir={ref}"], cwd=ref.parent)
            assert r.returncode == 0, r.stderr[-3000:]
            runs[layout] = ref
        return runs[layout]

    return run


@pytest.mark.parametrize("victim, sig, layout", [
    (1, signal.SIGKILL, "trainer.particle_parallel=2"), (1, signal.SIGKILL, "trainer.particle_parallel=1"),
    (0, signal.SIGKILL, "trainer.particle_parallel=2"), (0, signal.SIGTERM, "trainer.particle_parallel=1")],
    ids=["kill-rank-1-S2", "kill-rank-1-D2", "kill-rank-0-S2", "term-rank-0-D2"])
def test_a_rank_stopped_mid_run_then_a_rerun_equals_the_uninterrupted_run(tmp_path, uninterrupted, victim, sig, layout):
    run = tmp_path / "run"
    args = TRAIN + [*LONG, layout, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=job_env())
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.csv").exists() and (run / "metrics.csv").read_text().count("\n") > 60:
            break
        time.sleep(0.02)
    (follower,) = _children(proc.pid)
    os.kill([proc.pid, follower][victim], sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-2000:]
    assert _gone(follower), "the other rank outlived the job"
    if sig == signal.SIGTERM:
        assert proc.returncode == 143 and json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    r = cli(args, cwd=tmp_path)
    assert r.returncode == 0 and "resuming from" in (run / "train.log").read_text(), r.stderr[-3000:]
    ref = uninterrupted(layout)
    assert pd.read_csv(run / "metrics.csv").equals(pd.read_csv(ref / "metrics.csv"))
    for k in "uwb":
        assert torch.equal(read_particles(run)["final"][k], read_particles(ref)["final"][k])
    a, b = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    assert a["final"] == b["final"] and a["certificate"] == b["certificate"] and a["steps"] == b["steps"] == 200


def test_resuming_with_another_layout_is_refused_naming_the_keys(tmp_path):
    run = tmp_path / "run"
    r = cli(TRAIN + [*RUN, "trainer.devices=2", "trainer.particle_parallel=2", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    before = sorted(p.name for p in run.iterdir())
    r = cli(TRAIN + [*RUN, "trainer.max_steps=20", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert r.returncode == 2 and "trainer.devices: 2 -> 1" in r.stderr and "trainer.particle_parallel: 2 -> 1" in r.stderr
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("launcher", ["builtin", "torchrun"])
def test_a_sweep_of_two_rank_jobs_leaves_one_run_directory_and_one_wandb_run_per_job(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    args = ["-m", *RUN, "model.M=16,32", "trainer.devices=2", "trainer.particle_parallel=2", "logger=wandb",
            f"hydra.sweep.dir={sweep}"]
    if launcher == "torchrun":
        torchrun = shutil.which("torchrun", path=str(Path(TRAIN[0]).parent))
        command = [torchrun, "--standalone", "--nproc-per-node=2", "-m", "cotresnet.train", *args]
    else:
        command = TRAIN + args
    r = cli(command, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    for job in jobs:
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
        assert json.loads((job / "summary.json").read_text())["status"] == "max_steps"
        assert list(pd.read_csv(job / "metrics.csv")["step"]) == list(range(0, 13, 2))  # each row written once
    assert "2 runs: 2 finished" in r.stdout
