"""Callbacks schedule the pure diagnostics of `cotresnet.diagnostics` and log them; the flow's state and its
stop rule live in `record.FlowRecord`. Nothing here decides or measures on its own.

Row semantics: the row of step k describes the particles theta_k before the k-th update (risk_train
is the risk the k-th step differentiates). A last row at step = steps taken describes the final particles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import lightning as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from .. import diagnostics as D
from ..record import FlowRecord


class DivergenceError(RuntimeError):
    """A non-finite risk or gradient with trainer.fail_on_divergence=true."""


@dataclass
class Cadence:
    """Steps between rows, kernel evaluations and distances (0: never); the kernels' sample count."""

    log_every: int
    kernel_every: int
    ot_every: int
    n_kernel: int
    fail_on_divergence: bool = False
    full_batch_rows: bool = False  # minibatch SGD: rows are recomputed on the whole training set
    kernel_memory: int = 2**30  # bytes of kernel temporaries (callbacks.kernel_memory_mb)


class FlowDiagnostics(pl.Callback):
    """Every step: (risk, G) of the step's particles into the record (the step's own gradients under
    full-batch training; the whole training set under minibatch SGD, whose rows describe the flow's risk).
    Every `log_every` steps a row with test metrics, kernels and distances when due."""

    def __init__(self, record: FlowRecord, data, cadence: Cadence, loggers: list, spectrum=None,
                 replica: Optional[int] = None, depths=None, depth_weight: Optional[float] = None):
        super().__init__()
        self.record, self.data, self.cadence = record, data, cadence
        self.loggers, self.spectrum, self.replica = loggers, spectrum, replica
        # depth-mobile particles: their depth histogram's writer, and kappa when their depths move
        self.depths, self.depth_weight = depths, depth_weight

    @property
    def state_key(self) -> str:
        return f"FlowDiagnostics[{self.replica}]" if self.replica is not None else "FlowDiagnostics"

    def on_fit_start(self, trainer, pl_module):
        if self.record.init is None:
            self.record.init = pl_module.replica_net(self.replica).particles()

    def _train(self, device):
        return self.data.x_train.to(device), self.data.y_train.to(device)

    def _row(self, net, row: dict, final: bool = False) -> dict:
        """Complete a step's row: test metrics; kernels and distances when due (or switched on, `final`)."""
        step, c, device = row["step"], self.cadence, net.u.device
        row.update(D.evaluate(net, self.data.x_test, self.data.y_test, self.data.classification, "test"))
        if self.data.classification:
            row.update(D.evaluate(net, self.data.x_train, self.data.y_train, True, "train"))
        if self.depths is not None:
            self._depth_row(net, row)
        if c.kernel_every and (final or step % c.kernel_every == 0):
            x, y = self._train(device)
            kd = self._kernel_diagnostics(net, x[: c.n_kernel], y[: c.n_kernel])
            row.update(self.record.kernels(kd, self.data.n_train))
            if self.spectrum is not None:
                for decade, count, share in kd.spectrum.decades + [("unresolved", *kd.spectrum.unresolved)]:
                    self.spectrum.append({"step": step, "flow_time": row["flow_time"], "decade": decade,
                                          "eigenvalues": count, "residual_share": share})
        if c.ot_every and (final or step % c.ot_every == 0):
            row.update(D.distances(net.particles(), self.record.init))
        return self.record.log_row(row)

    def _kernel_diagnostics(self, net, x, y):
        if self.depths is None:
            return D.kernel_diagnostics(net, x, y, memory_budget=self.cadence.kernel_memory)
        from ..diagnostics import depth

        return depth.kernel_diagnostics(net, x, y, self.depth_weight)

    def _depth_row(self, net, row: dict) -> None:
        """The depth marginal's columns, and its histogram into depths.csv."""
        from ..diagnostics.depth import depth_histogram, depth_row
        from ..rundir.contract import DEPTH_BINS

        s = net.particles()["s"]
        row.update(depth_row(s, net.L))
        for i, count in enumerate(depth_histogram(s, DEPTH_BINS).tolist()):
            self.depths.append({"step": row["step"], "flow_time": row["flow_time"], "bin_lo": i / DEPTH_BINS,
                                "bin_hi": (i + 1) / DEPTH_BINS, "count": count})

    def _log(self, row: dict) -> None:
        values = {k: v for k, v in row.items() if v is not None}  # not computed here, or unresolved
        for lg in self.loggers:
            lg.log_metrics(values, step=int(row["step"]))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.record.done:
            pl_module.zero_replica_grads(self.replica)
            return
        v = pl_module.view(self.replica)
        step = trainer.global_step
        G_step = D.grad_norm2(v.grads, v.net.L, v.net.M).item()
        risk, G = v.risk.item(), G_step
        if self.cadence.full_batch_rows and math.isfinite(G_step):
            risk, G = D.risk_and_grad_norm2(v.net, *self._train(v.net.u.device), self.depth_weight)
        # the step moves theta by lr * grad: its COT length is lr sqrt(sum |grad|^2 / (L M))
        row = self.record.step(step, risk, G, v.tau, v.lr * math.sqrt(max(G_step, 0.0)) / (v.net.L * v.net.M),
                               v.depth_step)
        if row is None:
            self._diverge(trainer, pl_module, step, risk, G)
            return
        if step % self.cadence.log_every == 0:
            self._log(self._row(v.net, row))
        if self.record.done:
            self._stop(trainer)

    def _diverge(self, trainer, pl_module, step: int, risk: float, G: float) -> None:
        if self.cadence.fail_on_divergence:
            raise DivergenceError(f"non-finite risk ({risk}) or gradient norm ({G}) at step {step}")
        last = self.record.last_step_row
        if last and last["step"] > self.record.last_row.get("step", -1):
            # the last finite step's cheap metrics as a row (its particles are gone: no kernels)
            self._log(self.record.log_row(dict(last)))
        pl_module.zero_replica_grads(self.replica)  # this step is a no-op: the particles stay theta_k
        self._stop(trainer)

    @staticmethod
    def _stop(trainer) -> None:
        """This flow is done: later steps leave it alone; the run ends when every flow is done."""
        if all(cb.record.done for cb in trainer.callbacks if isinstance(cb, FlowDiagnostics)):
            trainer.should_stop = True

    def final_row(self, net, tau: float, steps: int) -> None:
        """The row of the final particles (none for a diverged flow), with every diagnostic switched on."""
        if self.record.status == "diverged":
            return
        risk, G = D.risk_and_grad_norm2(net, *self._train(net.u.device), self.depth_weight)
        row = self.record.final(steps, risk, G, tau)
        if row is not None:
            self._log(self._row(net, row, final=True))

    def state_dict(self):
        return self.record.state_dict()

    def load_state_dict(self, state):
        converge_ratio = self.record.converge_ratio  # this run's, which may differ from the checkpoint's
        self.record.load_state_dict(state)
        self.record.reopen(converge_ratio)


class StopOnRequest(pl.Callback):
    """Ends training after the current step when `requested` is set (SIGTERM, SIGINT, pre-emption)."""

    def __init__(self):
        self.requested: Optional[int] = None  # the signal number

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.requested is not None:
            trainer.should_stop = True


class PreloadedCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader, handed the checkpoint the job's checks already loaded (and checked):
    a resumed job reads its checkpoint once. Any other path is read as usual."""

    def __init__(self, path, checkpoint: dict):
        super().__init__()
        self.path, self.checkpoint = Path(path), checkpoint

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        if self.checkpoint is not None and Path(path) == self.path:
            checkpoint, self.checkpoint = self.checkpoint, None
            return checkpoint
        return super().load_checkpoint(path, weights_only=weights_only)


class Checkpointer(pl.Callback):
    """Writes <run dir>/checkpoints/last.ckpt (atomically) every `every` steps (0: never mid-run), when
    asked to (`request()`, e.g. by a SLURM pre-emption signal), and at the end of training: particles,
    optimizer, loops, every flow record, RNG states and `extra` (identity, wandb run ids)."""

    def __init__(self, path, every: int, extra: dict):
        super().__init__()
        self.path, self.every, self.extra = path, every, extra
        self.pending: List = []  # callables to run once a requested checkpoint is written

    def request(self, then=None) -> None:
        self.pending.append(then or (lambda: None))

    def save(self, trainer, final: bool = False) -> None:
        from ..rundir.atomic import atomic_torch_save
        from .resume import rng_states

        ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        ckpt["cotresnet"] = {**self.extra, "rng": rng_states(), "global_step": trainer.global_step, "final": final}
        atomic_torch_save(ckpt, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (self.every and trainer.global_step % self.every == 0) or self.pending:
            self.save(trainer)
        while self.pending:
            self.pending.pop(0)()

    def on_train_end(self, trainer, pl_module):
        self.save(trainer, final=True)

