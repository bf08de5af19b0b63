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
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def progress_callback(mode: str, record, total: int, interval_s: float = 30.0):
    """A Lightning callback showing step, flow time, risk, P-L ratio, steps/s and ETA of a job.
    `mode`: auto (a live tqdm line on a terminal, log lines otherwise), bar, log."""
    import lightning as pl

    bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())

    class Progress(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.t0, self.last, self.start = time.time(), 0.0, trainer.global_step
            self.bar = None
            if bar:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=self.start, dynamic_ncols=True, leave=True, unit="step")

        def _fields(self, step: int) -> str:
            running = record.running
            row = record.step_row(int(running.argmax()) if running.any() else 0)
            rate = (step - self.start) / max(time.time() - self.t0, 1e-9)
            done = int((~running).sum())
            tail = f" replicas done {done}/{record.R}" if record.R > 1 else ""
            return (f"step {step}/{total} t {_g(row.get('flow_time'))} risk {_g(row.get('risk_train'))} "
                    f"P-L {_g(row.get('pl_ratio'))} {rate:.3g} steps/s ETA {eta((total - step) / rate if rate else math.inf)}"
                    + tail)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step, now = trainer.global_step, time.time()
            if self.bar is not None:
                self.bar.update(step - self.bar.n)
                if now - self.last > 0.5:
                    self.bar.set_description_str(self._fields(step), refresh=True)
                    self.last = now
            elif now - self.last > interval_s or step == total:
                log.info(self._fields(step))
                self.last = now

        def on_train_end(self, trainer, pl_module):
            if self.bar is not None:
                self.bar.close()

    return Progress()
