"""What a person watching a job sees: one live line (tqdm) or periodic log lines, and the run's summary
at the end."""
from __future__ import annotations

import logging
import math
import sys
import time

log = logging.getLogger("cotresnet")


def _g(v) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def print_summary(summary: dict) -> None:
    f, c = summary["final"], summary.get("certificate")
    print(f"status={summary['status']} steps={summary['steps']} flow_time={summary['flow_time']:.4g} "
          f"wall={summary.get('wall_time_s', 0):.1f}s")
    accuracy = (f"   accuracy train {_g(f['accuracy_train'])} test {_g(f.get('accuracy_test'))}"
                if f.get("accuracy_train") is not None else "")
    print(f"risk_train {_g(summary['risk_init'])} -> {_g(f.get('risk_train'))}   risk_test {_g(f.get('risk_test'))}   "
          f"min P-L ratio {_g(summary['min_pl_ratio'])}{accuracy}")
    if c:
        label = "certificate" if c["kind"] == "full" else f"probe certificate (first {c['n']} of {c['n_train']} samples)"
        lam = f"lambda_min(K) {_g(c['lambda_min_tangent_init'])} (resolution {_g(c['resolution'])})"
        if c["c0"] is None:
            print(f"{label}: none: {lam} is not above its resolution")
        else:
            failed = [k.replace("_", " ") for k, ok in (c.get("conditions") or {}).items() if not ok]
            theory = f" (not a theorem for this run: {', '.join(failed)} fails)" if failed else ""
            print(f"{label}: {lam} -> {_g(f.get('lambda_min_tangent'))}; rate c0 {_g(c['c0'])}: guaranteed factor "
                  f"exp(-c0 t) {_g(c['guaranteed_factor'])} vs observed {_g(c['observed_factor'])}; radius "
                  f"{_g(c['certified_radius'])}, path {_g(f.get('path_length'))}: "
                  f"{'inside' if c['inside_certified_region'] else 'left the region'}{theory}")
    exact, lo, hi = f.get("cot_dist_init"), f.get("cot_dist_init_lower"), f.get("cot_dist_init_upper")
    w = _g(exact) if exact is not None or lo is None else f"in [{lo:.6g}, {hi:.6g}]"
    print(f"W_COT(mu_t, mu_0) {w}   path {_g(f.get('path_length'))}")
    for event in summary.get("events") or []:
        print(f"event: {event}")
    print(f"run directory: {summary['run_dir']}")


def eta(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(max(int(seconds), 0), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


class MovingRate:
    """Steps per second, exponentially weighted over the recent past (half-life `half_life_s` seconds),
    from the end of the first step on: the first step pays for start-up and would make the ETA hours long."""

    def __init__(self, half_life_s: float = 20.0):
        self.half_life_s, self.rate, self.mark = half_life_s, None, None

    def update(self, step: int, now: float) -> None:
        if self.mark is None:
            self.mark = (step, now)
            return
        dt = now - self.mark[1]
        if dt <= 0 or step == self.mark[0]:
            return
        recent = (step - self.mark[0]) / dt
        w = 0.5 ** (dt / self.half_life_s)
        self.rate = recent if self.rate is None else w * self.rate + (1 - w) * recent
        self.mark = (step, now)

    def eta(self, left: int) -> str:
        return eta(left / self.rate) if self.rate else "?"


def _terminal_size():
    """(columns, lines, whether the terminal set them). A pseudo-terminal that never set its size (script,
    CI runners, some IDEs) says 0 x 0, where tqdm prints nothing at all: 100 x 20 then."""
    import os

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 100, 20, False
    return size.columns or 100, size.lines or 20, bool(size.columns and size.lines)


def progress_callback(mode: str, record, total: int, run_dir, interval_s: float = 30.0):
    """A Lightning callback showing a job's step, flow time, risk, P-L ratio, steps/s and ETA. `mode`: auto
    (a live tqdm bar when stderr is a terminal, log lines otherwise), bar, log. Under the bar the log lines
    still reach the run's train.log (not the terminal), so the file says how the job went either way."""
    import lightning as pl

    bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())

    class Progress(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.t0 = self.last = self.shown = time.time()
            self.start, self.rate, self.bar, self.file = trainer.global_step, MovingRate(), None, None
            if bar:
                from tqdm import tqdm

                columns, lines, sized = _terminal_size()
                self.bar = tqdm(total=total, initial=self.start, ncols=columns, nrows=lines, dynamic_ncols=sized,
                                leave=True, unit="step", file=sys.stderr, mininterval=0.25,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                                           "{rate_fmt}]{postfix}")
                self.file = _file_only_logger(run_dir)

        def _fields(self, step: int) -> str:
            running = record.running
            row = record.step_row(int(running.argmax()) if running.any() else 0)
            tail = f" replicas running {int(running.sum())}/{record.R}" if record.R > 1 else ""
            return f"t {_g(row.get('flow_time'))} risk {_g(row.get('risk_train'))} P-L {_g(row.get('pl_ratio'))}" + tail

        def _line(self, step: int) -> str:
            rate = f"{self.rate.rate:.3g} steps/s" if self.rate.rate else "? steps/s"
            return f"step {step}/{total} {self._fields(step)} {rate} ETA {self.rate.eta(total - step)}"

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step, now = trainer.global_step, time.time()
            self.rate.update(step, now)
            if self.bar is not None:
                self.bar.update(step - self.bar.n)
                if now - self.shown > 0.5 or step == total:
                    self.bar.set_postfix_str(self._fields(step), refresh=step == total)
                    self.shown = now
            if now - self.last > interval_s or step == total:
                (self.file or log).info(self._line(step))
                self.last = now

        def teardown(self, trainer, pl_module, stage):  # also after an exception, where on_train_end never runs
            if self.bar is not None:
                self.bar.close()
                for h in self.file.handlers:
                    h.close()
                self.bar = None

    return Progress()


def _file_only_logger(run_dir) -> logging.Logger:
    """A logger writing to the run's train.log alone (the terminal shows the bar)."""
    from pathlib import Path

    from ..rundir.contract import LOG

    file_log = logging.getLogger(f"cotresnet.progress.{Path(run_dir).name}")
    file_log.propagate, file_log.handlers = False, []
    handler = logging.FileHandler(Path(run_dir) / LOG)
    handler.setFormatter(logging.Formatter("[%(asctime)s][cotresnet][INFO] - %(message)s"))
    file_log.addHandler(handler)
    file_log.setLevel(logging.INFO)
    return file_log
