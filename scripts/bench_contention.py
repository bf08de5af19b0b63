"""Shared-CPU benchmark: a job alone, then next to two other training jobs started with their defaults
(as other users' jobs would be), for a single run, a job of the parallel (joblib) launcher and a SLURM
job with cpus_per_task smaller than the node. Every row is (next to competitors) / (alone).

    python scripts/bench_contention.py [--steps 300] [--json bench-contention.json]

The competitors are real cotresnet-train jobs with default settings (their OpenMP pools are what hurts
on shared cores; busy shell loops understate it). Times are each job's own wall_time_s from its summary
(Python start-up excluded) and the whole command's wall time. `fair share` is the slowdown the kernel's
per-session fairness alone implies (autogroup: the cores are split between sessions, and each competitor
is a session of its own), 1.5 for one job on 2 cores and 3 for the two workers of a parallel sweep: no
choice of threads can beat it. `default_job_threads_2` is the job with torch's own default (wave 1).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
TRAIN = [sys.executable, "-m", "cotresnet.train"]


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "WANDB_SERVICE")}
    return {**env, **(extra or {})}


def start_competitors(tmp: Path, n: int = 2):
    """n default training jobs that run until stopped (each in its own process group)."""
    procs = [subprocess.Popen(TRAIN + ["trainer.max_steps=10000000", "trainer.progress=none",
                                       f"hydra.run.dir={tmp}/competitor{i}"], cwd=tmp, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for i in range(n)]
    time.sleep(8)  # past their start-up: they are training
    return procs


def stop(procs) -> None:
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def timed(args, cwd: Path, env=None):
    """(command wall seconds, mean wall_time_s of the summaries it wrote below cwd/out)."""
    t0 = time.perf_counter()
    subprocess.run(TRAIN + args, cwd=cwd, env=_env(env), check=True, capture_output=True)
    wall = time.perf_counter() - t0
    jobs = [json.loads(p.read_text())["wall_time_s"] for p in (cwd / "out").rglob("summary.json")]
    return wall, sum(jobs) / len(jobs)


def fair_share(workers: int, competitors: int = 2) -> float:
    """The slowdown the scheduler's fairness alone implies for each of `workers` single-threaded jobs of one
    session next to `competitors` busy sessions: Linux's autogroup splits the cores between sessions first,
    so a session of w workers gets cores / sessions, not w / (w + competitors) of the machine."""
    cores = len(os.sched_getaffinity(0))
    alone = min(1.0, cores / workers)
    return alone / (min(cores / (1 + competitors), workers) / workers)


def measure(name, args, tmp: Path, env=None, workers: int = 1):
    """Alone, then next to two competitors: rows for the command's wall time and the job's own, with the
    fair-share slowdown of `workers` jobs run at once."""
    results = []
    for competing in (False, True):
        work = tmp / f"{name}-{int(competing)}"
        work.mkdir()
        procs = start_competitors(work) if competing else []
        try:
            results.append(timed([*args, f"hydra.run.dir={work}/out/run", f"hydra.sweep.dir={work}/out"], work, env))
        finally:
            stop(procs)
    (wall0, job0), (wall1, job1) = results
    fair = fair_share(workers)
    return [{"row": f"contention_{name} (command wall)", "alone": wall0, "competing": wall1, "ratio": wall1 / wall0,
             "fair_share": fair},
            {"row": f"contention_{name} (job wall)", "alone": job0, "competing": job1, "ratio": job1 / job0,
             "fair_share": fair}]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--json", type=Path, default=Path("bench-contention.json"))
    args = ap.parse_args(argv)
    job = [f"trainer.max_steps={args.steps}", "trainer.progress=none"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows += measure("default_job", job, tmp)
        # the same job with 2 intra-op threads whatever the load (torch's own default, wave 1): the baseline
        rows += measure("default_job_threads_2", [*job, "trainer.threads=2"], tmp)
        rows += measure("parallel_launcher", ["-m", "seed=0,1", "hydra/launcher=parallel", *job], tmp, workers=2)
        from slurm_local import SlurmCluster, available

        if available():
            print(f"SLURM row skipped: {available()}")
        else:
            with SlurmCluster(tmp / "slurm") as cluster:
                slurm = ["-m", "seed=0", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                         "hydra.launcher.mem_gb=1", *job]
                rows += measure("slurm_cpus_per_task_1", slurm, tmp, env={"SLURM_CONF": str(cluster.conf)})
    print(f"{'row':48s} {'alone':>7s} {'competing':>9s} {'ratio':>6s} {'fair share':>10s}   (target: ratio < 2, or "
          "near the fair share where that is above 2)")
    for r in rows:
        print(f"{r['row']:48s} {r['alone']:7.2f} {r['competing']:9.2f} {r['ratio']:6.2f} {r['fair_share']:10.2f}")
    args.json.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
