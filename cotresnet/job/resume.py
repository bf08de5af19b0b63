"""What lets a job stop and continue exactly: RNG states in checkpoints, and signals.

SIGTERM and SIGINT end training after the current step: a checkpoint is written, the summary says
`interrupted`, and the process exits 128 + the signal number (a sweep stops launching). Under submitit,
SIGUSR2 announces pre-emption or the time limit: the job checkpoints, then hands the signal to
submitit, which requeues it; the requeued job resumes (resume=auto).
"""
from __future__ import annotations

import logging
import random
import signal
import threading

log = logging.getLogger("cotresnet")


class Interrupted(BaseException):
    """Raised once an interrupted job has written its files: unwinds through Hydra (which catches
    Exception only) so that a sweep launches nothing more. `code` is the exit status, 128 + signal."""

    def __init__(self, signum: int, summaries=()):
        super().__init__(f"interrupted by signal {signum}")
        self.code = 128 + signum
        self.summaries = list(summaries)  # what the interrupted job wrote, one summary per member


def rng_states() -> dict:
    """torch, numpy and python RNG states as tensors and plain containers (loadable with weights_only)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_states(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))


class GracefulStop:
    """While training: SIGTERM / SIGINT ask `stop` to end after the current step and `checkpointer` to
    write a checkpoint (a second SIGINT interrupts at once); SIGUSR2 under submitit checkpoints, then
    calls submitit's handler. The previous handlers come back on exit."""

    def __init__(self, stop, checkpointer):
        self.stop, self.checkpointer, self.previous = stop, checkpointer, {}

    def request_stop(self, signum, frame):
        if self.stop.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("signal %d: stopping after this step (a checkpoint is written)", signum)
        self.stop.requested = signum
        self.checkpointer.request()

    def _preempted(self, signum, frame):
        log.warning("signal %d: checkpointing before submitit requeues the job", signum)
        previous = self.previous[signal.SIGUSR2]
        self.checkpointer.request(lambda: previous(signum, frame))

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach the main thread only
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.previous[sig] = signal.signal(sig, self.request_stop)
        if callable(signal.getsignal(signal.SIGUSR2)):  # submitit's requeue handler
            self.previous[signal.SIGUSR2] = signal.signal(signal.SIGUSR2, self._preempted)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def interrupt_between_jobs() -> None:
    """SIGTERM outside training ends a sweep like SIGINT does: an Interrupted exception in the main thread."""
    def handler(signum, frame):
        raise Interrupted(signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
