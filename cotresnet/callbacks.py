"""Callbacks: they schedule the pure diagnostics of `diagnostics.py` and log them; nothing else.

Row semantics: the row of step k describes the particles theta_k before the k-th update
(risk_train is the risk the k-th step differentiates). A last row at step = steps taken describes
the final particles.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import lightning as pl
import torch

from . import diagnostics as D
from .data import Dataset


class DivergenceError(RuntimeError):
    """A non-finite risk or gradient with trainer.fail_on_divergence=true."""


class FlowDiagnostics(pl.Callback):
    """Every step (cheap, from the gradients the step already has): G, P-L ratio, flow fidelity,
    path length, divergence and convergence checks. Every `log_every` steps: a row with test metrics.
    Every `kernel_every` / `ot_every` steps: tangent and feature kernels / exact W_COT to mu_0."""

    def __init__(self, data: Dataset, n_probe: int, log_every: int, kernel_every: int, ot_every: int,
                 converge_ratio: float = 0.0, fail_on_divergence: bool = False, replica: Optional[int] = None,
                 loggers: Optional[list] = None):
        super().__init__()
        self.replica = replica  # index in a ReplicatedResNet, or None for a plain network
        self.loggers = loggers  # None: the trainer's loggers
        self.data = data
        self.n_probe = min(n_probe, data.x_train.shape[0])
        self.log_every, self.kernel_every, self.ot_every = log_every, kernel_every, ot_every
        self.converge_ratio = converge_ratio
        self.fail_on_divergence = fail_on_divergence
        self.state: Dict[str, object] = {
            "risk0": None, "fidelity_integral": 0.0, "path_length": 0.0, "lambda0": None, "risk_probe0": None,
            "certified_radius": None, "c0": None, "inside_certified_region": True, "init": None,
            "min_pl_ratio": math.inf, "status": "max_steps", "diverged_at": None, "last_finite": {},
            "last_step": None, "stopped_at": None,
        }
        self.lambda_layers_init = None
        self.lambda_layers_final = None

    @property
    def state_key(self) -> str:
        return f"FlowDiagnostics[{self.replica}]" if self.replica is not None else "FlowDiagnostics"

    @property
    def done(self) -> bool:
        return self.state["stopped_at"] is not None or self.state["status"] == "diverged"

    # -- helpers ------------------------------------------------------------------------------
    def _probe(self, device, dtype):
        return self.data.x_train[: self.n_probe].to(device, dtype), self.data.y_train[: self.n_probe].to(device, dtype)

    def _kernel_metrics(self, net, device) -> Dict[str, float]:
        x, y = self._probe(device, torch.float64)
        kd = D.kernel_diagnostics(net, x, y)
        layers = kd.pop("lambda_min_feature_layers")
        s = self.state
        if s["lambda0"] is None:
            s["lambda0"], s["risk_probe0"] = kd["lambda_min_tangent"], kd["risk_probe"]
            s.update(D.certificate(kd["risk_probe"], kd["lambda_min_tangent"], self.n_probe))
            self.lambda_layers_init = layers
        self.lambda_layers_final = layers
        if s["lambda0"] > 0:
            kd["lambda_ratio"] = kd["lambda_min_tangent"] / s["lambda0"]
            if kd["lambda_ratio"] < 0.5:
                s["inside_certified_region"] = False
        return kd

    def _ot_metrics(self, net) -> Dict[str, float]:
        now, init = net.particles(), self.state["init"]
        return {"cot_dist_init": D.cot_distance(now, init), "cot_dist_init_upper": D.cot_distance_upper(now, init),
                "cot_dist_init_lower": D.cot_distance_lower(now, init)}

    def _row(self, net, dt: float, step: int, risk: float, G: float) -> Dict[str, float]:
        s = self.state
        row = {"step": step, "flow_time": step * dt, "risk_train": risk, "grad_norm2": G,
               "pl_ratio": G / risk if risk > 0 else math.nan,
               "risk_predicted": D.fidelity_prediction(s["risk0"], s["fidelity_integral"]),
               "path_length": s["path_length"]}
        if s["certified_radius"] is not None and math.isfinite(s["certified_radius"]):
            row["path_over_radius"] = s["path_length"] / s["certified_radius"]
            if row["path_over_radius"] >= 1.0:
                s["inside_certified_region"] = False
        row.update(D.evaluate(net, self.data.x_test.to(net.u.device), self.data.y_test.to(net.u.device),
                              self.data.classification, "test"))
        if self.data.classification:
            row.update(D.evaluate(net, self.data.x_train.to(net.u.device), self.data.y_train.to(net.u.device),
                                  True, "train"))
        if self.kernel_every and step % self.kernel_every == 0:
            row.update(self._kernel_metrics(net, net.u.device))
        if self.ot_every and step % self.ot_every == 0:
            row.update(self._ot_metrics(net))
        return row

    def _log(self, trainer, row: Dict[str, float]) -> None:
        for lg in trainer.loggers if self.loggers is None else self.loggers:
            lg.log_metrics(row, step=int(row["step"]))

    # -- hooks ------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module):
        if self.state["init"] is None:
            self.state["init"] = pl_module.replica_net(self.replica).particles()

    def _stop(self, trainer) -> None:
        """This network (replica) is done: later steps leave it alone; the run ends when all are done."""
        everyone = [cb for cb in trainer.callbacks if isinstance(cb, FlowDiagnostics)]
        if all(cb.done for cb in everyone):
            trainer.should_stop = True

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        s = self.state
        if self.done:
            pl_module.zero_replica_grads(self.replica)
            return
        v = pl_module.view(self.replica)
        net, step = v.net, trainer.global_step
        risk, G = v.risk.item(), D.grad_norm2(v.grads, net.L, net.M).item()
        if not (math.isfinite(risk) and math.isfinite(G)):
            self._diverge(trainer, pl_module, v, step, risk, G)
            return
        if s["risk0"] is None:
            s["risk0"] = risk
        if step % self.log_every == 0:
            row = self._row(net, v.dt, step, risk, G)
            s["last_finite"] = row
            self._log(trainer, row)
        else:
            s["last_step"] = {"step": step, "flow_time": step * v.dt, "risk_train": risk, "grad_norm2": G,
                              "pl_ratio": G / risk if risk > 0 else math.nan, "path_length": s["path_length"],
                              "risk_predicted": D.fidelity_prediction(s["risk0"], s["fidelity_integral"])}
        ratio = G / risk if risk > 0 else math.inf
        s["min_pl_ratio"] = min(s["min_pl_ratio"], ratio)
        s["fidelity_integral"] += v.dt * ratio
        # the SGD step moves theta by lr * grad: its COT length is lr sqrt(sum |grad|^2 / (L M))
        s["path_length"] += v.lr * math.sqrt(G) / (net.L * net.M)
        if self.converge_ratio > 0 and risk <= self.converge_ratio * s["risk0"]:
            s["status"], s["stopped_at"] = "converged", step + 1
            self._stop(trainer)

    def _diverge(self, trainer, pl_module, v, step: int, risk: float, G: float):
        s = self.state
        s["status"], s["diverged_at"] = "diverged", step
        if self.fail_on_divergence:
            raise DivergenceError(f"non-finite risk ({risk}) or gradient norm ({G}) at step {step}")
        last = s["last_step"]
        if last is not None and last["step"] > s["last_finite"].get("step", -1):
            # the last finite step's cheap metrics as a row (its particles are gone: no kernels)
            s["last_finite"] = last
            self._log(trainer, last)
        # make this step a no-op so the particles stay the last finite ones
        pl_module.zero_replica_grads(self.replica)
        self._stop(trainer)

    def on_train_end(self, trainer, pl_module):
        """The final row: the particles after the last update (not for a diverged run)."""
        if self.state["status"] == "diverged":
            return
        net = pl_module.replica_net(self.replica)
        dt = pl_module.dts[self.replica or 0]
        step = self.state["stopped_at"] or trainer.global_step
        risk, G = D.risk_and_grad_norm2(net, self.data.x_train, self.data.y_train)
        if not (math.isfinite(risk) and math.isfinite(G)):
            self.state["status"], self.state["diverged_at"] = "diverged", step
            return
        row = self._row(net, dt, step, risk, G)
        if self.kernel_every and "lambda_min_tangent" not in row:
            row.update(self._kernel_metrics(net, net.u.device))
        if self.ot_every and "cot_dist_init" not in row:
            row.update(self._ot_metrics(net))
        if self.converge_ratio > 0 and risk <= self.converge_ratio * self.state["risk0"]:
            self.state["status"] = "converged"
        self.state["last_finite"] = row
        self._log(trainer, row)

    def state_dict(self):
        return {**self.state, "lambda_layers_init": self.lambda_layers_init,
                "lambda_layers_final": self.lambda_layers_final}

    def load_state_dict(self, state):
        state = dict(state)
        self.lambda_layers_init = state.pop("lambda_layers_init")
        self.lambda_layers_final = state.pop("lambda_layers_final")
        self.state.update(state)


def rng_states() -> dict:
    """torch, numpy and python RNG states as tensors and plain containers (loadable with weights_only)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_states(state: dict) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype("uint32"), n["pos"], n["has_gauss"], n["gauss"]))


class Checkpointer(pl.Callback):
    """Writes <run dir>/checkpoints/last.ckpt (atomically) every `every` steps and when asked to
    (`request()`, e.g. from a SLURM pre-emption signal): particles, optimizer, loops, the diagnostics'
    accumulators, RNG states, and `extra` (the wandb run id, shapes)."""

    def __init__(self, path, every: int, extra: dict):
        super().__init__()
        self.path, self.every, self.extra = path, every, extra
        self.pending = None  # a callable to run once a requested checkpoint is written

    def request(self, then=None) -> None:
        self.pending = then or (lambda: None)

    def save(self, trainer) -> None:
        from .atomic import atomic_torch_save

        ckpt = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        ckpt["cotresnet"] = {**self.extra, "rng": rng_states(), "global_step": trainer.global_step}
        atomic_torch_save(ckpt, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (self.every and trainer.global_step % self.every == 0) or self.pending is not None:
            self.save(trainer)
        if self.pending is not None:
            then, self.pending = self.pending, None
            then()
