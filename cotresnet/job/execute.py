"""Running one checked job: its run directories owned (one lock each, for the job's life), the plan decided
again under the locks, the job fitted (fit.py), and what happened recorded whatever it was: a summary for a
failure (with its traceback) or an interruption before training wrote one, the job's train.log."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Tuple

import torch

from ..rundir import contract as RD
from ..rundir.ownership import clear_outputs
from .checks import JobCheck
from .fit import JobContext, fit, write_summary

log = logging.getLogger("cotresnet")


def record_interruption(check: JobCheck) -> None:
    """A job stopped by a signal before its training wrote a summary (while it set up or checked): an
    `interrupted` summary with no steps in every member's directory that has none, so the run says what
    happened and a rerun starts it again."""
    for m in check.members:
        if not (m.run_dir / RD.SUMMARY).exists():
            write_summary(m, {"status": "interrupted", "steps": 0, "flow_time": 0.0, "final": {}, "risk_init": None,
                              "min_pl_ratio": None, "certificate": None, "events": []})


def record_failure(check: JobCheck, error: BaseException) -> None:
    """A job that raised: traceback.txt and a `failed` summary.json in every member's directory."""
    import traceback

    from ..rundir.atomic import atomic_write_bytes

    for m in check.members:
        atomic_write_bytes(m.run_dir / RD.TRACEBACK, traceback.format_exc().encode())
        write_summary(m, {"status": "failed", "error": f"{type(error).__name__}: {error}"})


def execute(check: JobCheck, ctx: JobContext) -> Tuple[str, List[dict]]:
    """Own the job's run directories (one lock each, for the job's life), decide again under the locks
    (another job may have written there since the first check), then train, or report the run done
    without touching a file. Returns (the plan's action, the members' summaries). A job that raises
    leaves traceback.txt and a `failed` summary, and the exception propagates."""
    from ..rundir.ownership import RunLock
    from .checks import replan
    from .ranks import job_ranks
    from .resume import Interrupted

    if check.plan.action == "done":  # a finished run is read, never written: no lock (its directory may be read-only)
        return "done", [RD.read_summary(m.run_dir) for m in check.members]
    dirs = dict.fromkeys([check.run_dir] + [m.run_dir for m in check.members])
    locks = []
    try:
        for d in dirs:
            locks.append(RunLock(d).acquire())
        check = replan(check)
        if check.plan.action == "done":
            return "done", [RD.read_summary(m.run_dir) for m in check.members]
        for d in dirs:  # what a job killed in the middle of a write left (a checkpoint's can be gigabytes)
            RD.remove_stale_temporaries(d)
        clear_outputs(check.plan.clear)  # the old train.log included, before this job's log opens
        handler = _file_log(check.run_dir)
        try:
            if check.plan.reason:
                log.info("%s: %s", check.plan.action, check.plan.reason)
            threads_before = torch.get_num_threads()  # fit sets the job's own; the process keeps its own
            try:
                with job_ranks(check) as ranks:  # one process, or the job's ranks joined in its process group
                    return check.plan.action, fit(check, ctx, ranks)
            finally:
                torch.set_num_threads(threads_before)
        except Exception as e:
            record_failure(check, e)
            log.error("job failed: %s (traceback in %s)", e, check.run_dir)
            raise
        except (KeyboardInterrupt, Interrupted):  # a signal before training wrote anything: say so
            record_interruption(check)
            raise
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
    finally:
        for lock in locks:
            lock.release()


def _file_log(run_dir: Path) -> logging.Handler:
    """train.log in the run directory: every log line of the job (Hydra's own file log is off, so a
    rerun that finds the run done writes nothing)."""
    handler = logging.FileHandler(run_dir / RD.LOG)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
        logging.getLogger().setLevel(logging.INFO)
    return handler
