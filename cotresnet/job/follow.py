"""A rank other than 0 (job.ranks): it takes rank 0's jobs from its store and trains its shard of each, writing
nothing; rank 0 decides what signals do (its requests reach every rank after each step), so these ranks ignore
SIGINT and SIGTERM.

    python -m cotresnet.job.follow '<Ranks as JSON>'     (how rank 0 starts its ranks for one job)
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .ranks import ENDED, KEY, Ranks, connect, joined

log = logging.getLogger("cotresnet")


def follow(ranks: Ranks) -> int:
    """Train rank 0's jobs until it says the end; returns how many failed here (each is rank 0's failure too)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    store, k, failed = connect(ranks), 0, 0
    while (job := json.loads(store.get(KEY.format(k)))) is not None:
        try:
            run_job(job, ranks, store, k)
        except Exception:
            log.exception("rank %d: job %d (%s) failed", ranks.rank, k, job["run_dir"])
            failed += 1
        k += 1
    store.add(ENDED, 1)
    return failed


def run_job(job: dict, ranks: Ranks, store, k: int) -> None:
    """This rank's part of job k, as rank 0 checked and described it (job.ranks.describe)."""
    import torch
    from omegaconf import OmegaConf

    from ..data import load_dataset
    from ..rundir.atomic import load_trusted
    from ..rundir.ownership import Plan
    from .checks import JobCheck, Member
    from .fit import JobContext, fit

    cfg = OmegaConf.create(job["config"])
    dataset = load_dataset(cfg.data, getattr(torch, cfg.model.dtype))
    run_dir, ident = Path(job["run_dir"]), job["identity"]
    plan = Plan(job["action"], None if job["checkpoint"] is None else Path(job["checkpoint"]))
    checkpoint = load_trusted(plan.checkpoint, mmap=True) if plan.checkpoint is not None else None
    check = JobCheck(cfg, run_dir, [Member(cfg, dataset, run_dir, ident)], ident, plan, checkpoint)
    with joined(ranks, store, k, cfg) as mine:
        fit(check, JobContext(name=run_dir.name), mine)


def _exit_with(parent: int) -> None:
    """A rank rank 0 started ends when rank 0 does (even by SIGKILL, between collectives)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


if __name__ == "__main__":
    place = Ranks(**json.loads(sys.argv[1]))
    logging.basicConfig(level=logging.WARNING, format=f"[rank {place.rank}][%(levelname)s] - %(message)s")
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    sys.exit(1 if follow(place) else 0)
