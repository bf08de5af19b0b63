"""The sweep line: a thread printing one line whenever a sweep's counts change (any launcher: it watches
the sweep directory). Everything is counted in runs (one flow and one run directory each; a vectorized job
trains several), against the sweep's plan (sweep_plan.json) where its sweeper gives one."""
from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from ..job.progress import eta
from ..rundir import contract as RD


def planned(plan: Optional[dict]) -> str:
    """The plan's total runs as a sweep line shows it: `78`, `≤ 78` for a search's bound, `?` when unknown."""
    if not plan or plan.get("runs") is None:
        return "?"
    return f"{'≤ ' if plan.get('bound') else ''}{plan['runs']}"


class SweepMonitor:
    """A thread printing one line whenever a sweep's counts change: runs done, failed, running, ETA."""

    def __init__(self, sweep_dir: Path, every_s: float = 2.0):
        self.sweep_dir, self.every_s = Path(sweep_dir), every_s
        self.stop_event, self.thread, self.t0, self.last, self.finished0 = threading.Event(), None, time.time(), None, None

    def line(self) -> Optional[str]:
        from .sweep import sweep_progress

        p, plan = sweep_progress(self.sweep_dir), RD.read_sweep_plan(self.sweep_dir)
        finished = p["done"] + p["failed"]
        if self.finished0 is None:  # runs a resumed sweep found done: no part of this sweep's rate
            self.finished0 = finished
        key = (p["done"], p["failed"], p["running"], planned(plan))
        if key == self.last:
            return None
        self.last = key
        total = plan.get("runs") if plan else None
        left = max(total - finished, 0) if total is not None else math.nan
        here = finished - self.finished0
        seconds = left * (time.time() - self.t0) / here if here > 0 else math.inf
        return (f"sweep {self.sweep_dir.name}: {finished}/{planned(plan)} runs done ({p['failed']} failed, "
                f"{p['diverged']} diverged), {p['running']} running, ETA {eta(seconds)}")

    def _loop(self):
        while not self.stop_event.wait(self.every_s):
            try:
                text = self.line()
            except Exception:  # a half-written sweep directory: try again next time
                continue
            if text:
                print(text, file=sys.stderr, flush=True)

    def start(self) -> SweepMonitor:
        self.line()  # the counts at the start
        self.last = None
        self.thread = threading.Thread(target=self._loop, name="cotresnet-sweep-monitor", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
