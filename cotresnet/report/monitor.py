"""The sweep line: a thread printing one line whenever a sweep's counts change (any launcher: it watches
the sweep directory)."""
from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from ..job.progress import eta


class SweepMonitor:
    """A thread printing one line whenever a sweep's counts change: jobs done, failed, running, ETA.
    It reads the sweep directory (summaries, held run locks), so it works with every launcher."""

    def __init__(self, sweep_dir: Path, total: Optional[int], every_s: float = 2.0):
        self.sweep_dir, self.total, self.every_s = Path(sweep_dir), total, every_s
        self.stop_event, self.thread, self.t0, self.last = threading.Event(), None, time.time(), None

    def line(self) -> Optional[str]:
        from .sweep import sweep_progress

        p = sweep_progress(self.sweep_dir)
        key = (p["done"], p["failed"], p["running"])
        if key == self.last:
            return None
        self.last = key
        total = self.total or "?"
        finished = p["done"] + p["failed"]
        left = (self.total - finished) if self.total else math.nan
        rate = finished / max(time.time() - self.t0, 1e-9)
        return (f"sweep {self.sweep_dir.name}: {finished}/{total} jobs done ({p['failed']} failed, {p['diverged']} "
                f"diverged), {p['running']} running, ETA {eta(left / rate if rate else math.inf)}")

    def _loop(self):
        while not self.stop_event.wait(self.every_s):
            try:
                text = self.line()
            except Exception:  # a half-written sweep directory: try again next time
                continue
            if text:
                print(text, file=sys.stderr, flush=True)

    def start(self) -> SweepMonitor:
        self.thread = threading.Thread(target=self._loop, name="cotresnet-sweep-monitor", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
