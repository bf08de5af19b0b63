"""A real one-node SLURM cluster on 127.0.0.1: a sweep through the submitit SLURM launcher, a job
requeued mid-run (scontrol requeue), a job pre-empted with SIGUSR2 (checkpoint, requeue, resume)."""
import json
import math
import subprocess
import time

import pytest
from slurm_local import SlurmCluster, available

from helpers import TRAIN, cli, job_env

# one worker runs the whole module: its tests share one cluster
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm"),
              pytest.mark.skipif(bool(available()), reason=f"SLURM {available()}")]

LAUNCH = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
          "hydra.launcher.timeout_min=10"]
LONG = ["model.L=4", "model.M=16", "data.n_train=64", "callbacks.n_probe=32", "trainer.max_steps=2500",
        "trainer.log_every=1", "trainer.converge_ratio=0", "callbacks.kernel_every=500", "callbacks.ot_every=500"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c
    # the helper stops every process the cluster started: daemons, slurmstepd, srun, batch shells
    assert c.leftovers() == [], "processes of the test cluster survived its stop"


def test_sweep_through_the_slurm_launcher(cluster, tmp_path):
    out = tmp_path / "sweep"
    r = cli(TRAIN + ["-m", *LAUNCH, "model.M=4,8", "seed=0,1", "model.L=3", "data.n_train=16", "callbacks.n_probe=8",
                     "trainer.max_steps=20", f"hydra.sweep.dir={out}"], cwd=tmp_path, env=cluster.env)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in out.iterdir() if (p / ".hydra").is_dir())
    assert len(jobs) == 4
    for job in jobs:
        s = json.loads((job / "summary.json").read_text())
        assert s["status"] in ("max_steps", "converged")
        for name in ("metrics.csv", "particles.pt", "data.pt"):  # a sweep's jobs draw no figure by default
            assert (job / name).is_file()
    assert len(list((out / ".submitit").iterdir())) >= 4  # really went through sbatch
    assert "4 runs: 4 finished" in r.stdout


def test_a_two_task_job_trains_one_flow_into_one_run_directory(cluster, tmp_path):
    """trainer.devices=2: two SLURM tasks (SLURMEnvironment gives their ranks), one flow, one run directory."""
    out = tmp_path / "sweep"
    small = ["model.L=3", "model.M=8", "data.n_train=16", "callbacks.n_probe=8", "trainer.max_steps=20",
             "model.dtype=float64", "trainer.converge_ratio=0"]
    r = cli(TRAIN + ["-m", *LAUNCH, *small, "trainer.devices=2", "trainer.particle_parallel=2",
                     f"hydra.sweep.dir={out}"], cwd=tmp_path, env=cluster.env)
    assert r.returncode == 0, r.stderr[-3000:]
    (job,) = [p for p in out.iterdir() if (p / ".hydra").is_dir()]
    assert sorted(p.name for p in out.iterdir()) == sorted([".submitit", job.name, "multirun.yaml", "report",
                                                            "sweep_plan.json"])
    assert len(list((out / ".submitit").glob("*/*_log.out"))) == 2  # one log per task: two ranks
    ref = tmp_path / "ref"
    assert cli(TRAIN + [*small, "plots=[]", f"hydra.run.dir={ref}"], cwd=tmp_path).returncode == 0
    got, want = (json.loads((d / "summary.json").read_text()) for d in (job, ref))
    assert got["status"] == "max_steps" and math.isclose(got["final"]["risk_train"], want["final"]["risk_train"],
                                                         rel_tol=1e-10)


def _job_id(cluster):
    r = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=cluster.env)
    ids = r.stdout.split()
    return ids[0] if ids else None


def _release_when_requeued(cluster, job_id, timeout=120):
    """SLURM holds a requeued job for 120 s (BeginTime); a test need not wait for that. Released again while
    SLURM still shows the hold (under load the requeue can set it after a first release), until it runs."""
    deadline, released = time.time() + timeout, False
    while time.time() < deadline:
        r = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True,
                           env=cluster.env)
        state = r.stdout.split()
        if state == ["PENDING", "BeginTime"]:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, env=cluster.env)
            released = True
        elif released and state[:1] != ["PENDING"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} was not requeued and started again within {timeout} s: {state}")


def _interrupted_run(cluster, tmp_path, name, interrupt):
    """Launch one long job through SLURM, interrupt it once mid-run, wait for the launcher to finish."""
    out = tmp_path / name
    proc = subprocess.Popen(TRAIN + ["-m", *LAUNCH, *LONG, "checkpoint_every=50", f"hydra.sweep.dir={out}", "seed=3"],
                            cwd=tmp_path, env=job_env(cluster.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        metrics = list(out.glob("0_*/metrics.csv"))
        if metrics and metrics[0].read_text().count("\n") > 600:
            break
        time.sleep(0.05)
    job_id = _job_id(cluster)
    assert job_id is not None, "the job finished before it could be interrupted"
    interrupt(job_id)
    _release_when_requeued(cluster, job_id)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    (job,) = out.glob("0_*")
    return job


def test_requeued_job_finishes_with_the_same_final_risk(cluster, tmp_path):
    ref = tmp_path / "ref"
    r = cli(TRAIN + [*LONG, f"hydra.run.dir={ref}", "seed=3"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    want = json.loads((ref / "summary.json").read_text())["final"]["risk_train"]
    job = _interrupted_run(cluster, tmp_path, "requeue", lambda jid: subprocess.run(
        ["scontrol", "requeue", jid], check=True, env=cluster.env))
    got = json.loads((job / "summary.json").read_text())
    assert "resuming from" in (job / "train.log").read_text()
    assert got["status"] == "max_steps" and got["final"]["risk_train"] == want
    import pandas as pd
    assert list(pd.read_csv(job / "metrics.csv")["step"]) == list(range(2501))


def test_preempted_job_checkpoints_is_requeued_and_resumes(cluster, tmp_path):
    job = _interrupted_run(cluster, tmp_path, "preempt", lambda jid: subprocess.run(
        ["scancel", "--signal=USR2", jid], check=True, env=cluster.env))
    log = (job / "train.log").read_text()
    assert "checkpointing before submitit requeues" in log and "resuming from" in log
    s = json.loads((job / "summary.json").read_text())
    assert s["status"] == "max_steps" and s["steps"] == 2500

