"""The callback that schedules the pure diagnostics of `cotresnet.diagnostics` along a job's flows and logs
them; the flows' state and stop rule live in `record.FlowRecord`. Nothing here decides or measures on its own.

Every step, for every member of the job at once (one network, or the R replicas of a vectorized job): G and
the risk of the step's particles, the step's length (with its float rounding: see `step_lengths`), one
transfer of those (R,) numbers to the host, the record's update, and the members that stop (converged
before, or diverged now) made no-ops. Every `log_every` steps a row per member with test metrics, kernels
and distances when due.

Row semantics: the row of step k describes the particles theta_k before the k-th update (risk_train is the
risk the k-th step differentiates). A last row at step = steps taken describes the final particles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import lightning as pl
import numpy as np
import torch

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


@dataclass
class MemberOutputs:
    """Where member r's rows go: its data, loggers (metrics.csv first), spectrum.csv and depths.csv writers,
    its activation (for the certificate's conditions)."""

    data: object
    loggers: list
    spectrum: Optional[object] = None
    depths: Optional[object] = None
    activation: str = "tanh"


def step_lengths(lrs, grad_sq, theta_bound, LM: int, eps: float):
    """An upper bound of each member's realized move in the flow's metric |.|_COT = |.|_2 / sqrt(L M), (R,),
    from lrs, sum |grad|^2 (each (R,)) and an upper bound of |theta_k|_COT: the nominal move lr |grad|,
    widened by its float rounding. The update fl(theta - fl(lr grad)) rounds lr grad (relative u) and then
    each coordinate of the result (by at most u |theta_new|), u = eps / 2, so |realized| <= (1 + u) nominal +
    u (|theta| + (1 + u) nominal): the path length stays an upper bound of W_COT(mu_t, mu_0) in float32 too,
    whatever the step. |theta_k| <= |theta_0| + the path so far (triangle inequality) bounds |theta|."""
    u = eps / 2
    with np.errstate(invalid="ignore", over="ignore"):
        nominal = lrs * np.sqrt(np.maximum(grad_sq, 0.0)) / LM**0.5
        return (1 + u) * nominal + u * (theta_bound + (1 + u) * nominal)


class FlowDiagnostics(pl.Callback):
    """See the module doc. `data`: the job's training data (stacked over replicas); `outputs`: one per member."""

    def __init__(self, record: FlowRecord, data, outputs: List[MemberOutputs], cadence: Cadence,
                 depth_weight: Optional[float] = None):
        super().__init__()
        self.record, self.data, self.outputs, self.cadence = record, data, outputs, cadence
        self.depth_weight = depth_weight  # kappa, when depth-mobile particles' depths move
        self._references = {}  # member -> the feature-learning meter's reference at mu_0 (computed once)
        self._theta0 = self._tau_array = self._lr_array = None  # per member, fixed for the job

    @property
    def state_key(self) -> str:
        return "FlowDiagnostics"

    def on_fit_start(self, trainer, pl_module):
        if any(m.init is None for m in self.record.members):  # a resumed run's record holds them (on every rank)
            whole = pl_module.gathered()
            for r, m in enumerate(self.record.members):
                m.init = whole.member_net(r).particles() if whole is not None else None
        # |theta_0| in the flow's metric (a moving depth weighted by kappa), from the initial particles: with the
        # path so far it bounds |theta_k| (a resumed run gets the same bound, bit for bit). A rank that writes no
        # row has none; the stops its record decides never depend on it.
        kappa = self.depth_weight if self.depth_weight is not None else 0.0
        L, M = pl_module.net.L, pl_module.net.M
        self._theta0 = np.array([math.sqrt(sum(float(m.init[k].double().pow(2).sum()) * (kappa if k == "s" else 1.0)
                                               for k in m.init) / (L * M)) if m.init is not None else 0.0
                                 for m in self.record.members])

    def _stats(self, module):
        """(risk, G, step length, depth step) of every member for this step: (R,) float64 arrays on the host,
        from one transfer of the members' risks and squared norms (one reduction per tensor, on the device).
        Under minibatch SGD (one network) risk and G are the whole training set's."""
        L, M = module.net.L, module.net.M
        if module.members == 1 and module.depth_lr_factor is None:  # one network: one fused call, 0-dim norms
            host = module.step_numbers().cpu().numpy()[:, None]
            norms, depth = host[1:], None
        else:
            norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in module.member_tensors(grads=True)]
            depth = module.depth_steps()
            parts = [module.last_risk.reshape(-1), *norms] + ([depth] if depth is not None else [])
            host = torch.stack([p.double() for p in parts]).cpu().numpy()
        risk, grad_sq = host[0], (host[1:1 + len(norms)] ** 2).sum(0)
        G = L * M * grad_sq
        lengths = step_lengths(self._lrs(module), grad_sq, self._theta0 + self.record.path_length, L * M,
                               torch.finfo(module.net.u.dtype).eps)
        if self.cadence.full_batch_rows and np.isfinite(G).all():
            x, y = self.data.x_train, self.data.y_train
            risk, G = (np.array([v]) for v in D.risk_and_grad_norm2(module.net, x, y, self.depth_weight))
        return risk, G, lengths, host[-1] if depth is not None else None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        rec, step = self.record, trainer.global_step
        risk, G, lengths, depth = self._stats(pl_module)
        rec.step(step, risk, G, self._taus(pl_module), lengths, depth)
        moving = rec.running
        if not moving.all():
            pl_module.zero_member_grads(~moving)  # stopped members: this step leaves their particles as they are
        diverged = np.flatnonzero(rec.diverged_at == step).tolist()
        if diverged and self.cadence.fail_on_divergence:
            r = diverged[0]
            raise DivergenceError(f"non-finite risk ({float(risk[r])}) or gradient norm ({float(G[r])}) at step {step}")
        for r in diverged:
            self._diverged(pl_module, r, float(risk[r]))
        if depth is not None and float(depth.max()) > 1.0:
            self._event(0, f"step {step}: a depth step of {float(depth[0]):.3g} exceeds the depth interval [0, 1] "
                           "(lower optim.depth_weight or optim.dt)")
        # a member that stopped here gets its row from final_rows, with every diagnostic
        logged = moving & ((step - rec.offset) % self.cadence.log_every == 0)
        if logged.any():
            self._log_rows(pl_module, np.flatnonzero(logged).tolist(), step)
        if rec.done:
            trainer.should_stop = True

    def _taus(self, module) -> np.ndarray:
        """(R,): the flow time of one step of each member (fixed for the job: computed once)."""
        if self._tau_array is None:
            self._tau_array = np.array([module.tau(r) for r in range(self.record.R)])
        return self._tau_array

    def _lrs(self, module) -> np.ndarray:
        """(R,): each member's learning rate (fixed for the job: computed once)."""
        if self._lr_array is None:
            self._lr_array = module.member_lrs().cpu().numpy()
        return self._lr_array

    def _log_rows(self, module, members: List[int], step: int, final: bool = False,
                  rows: Optional[dict] = None) -> None:
        """Complete and log each member's row: test metrics (every member in one pass), depth marginal,
        kernels and distances when due (or switched on, `final`)."""
        module = module.gathered()  # the whole network where rows are written (one gather across particle shards)
        if module is None:
            return
        c = self.cadence
        rows = rows or {r: self.record.step_row(r) for r in members}
        tests = D.evaluate_members(module.net, self.data, members)
        kernels = c.kernel_every and (final or step % c.kernel_every == 0)
        distances = c.ot_every and (final or step % c.ot_every == 0)
        for r in members:
            row, out, net = rows[r], self.outputs[r], module.member_net(r)
            row.update(tests[r])
            if out.depths is not None:
                self._depth_row(r, net, row)
            if kernels:
                self._kernel_row(r, net, row, module.tau(r))
            if distances:
                row.update(D.distances(net.particles(), self.record.members[r].init))
                if out.depths is not None:
                    from ..diagnostics.depth import joint_distances

                    row.update(joint_distances(net.particles(), self.record.members[r].init, self.depth_weight or 1.0))
            self._log(r, self.record.log_row(r, row))

    def _kernel_row(self, r: int, net, row: dict, tau: float) -> None:
        n, out = self.cadence.n_kernel, self.outputs[r]
        x, y = out.data.x_train[:n].to(net.u.device), out.data.y_train[:n].to(net.u.device)
        if out.depths is None:
            kd = D.kernel_diagnostics(net, x, y, memory_budget=self.cadence.kernel_memory, keep_kernel=True)
            row.update(self._meter(r, net, x, y, kd, int(row["step"]), tau))
        else:
            from ..diagnostics import depth

            kd = depth.kernel_diagnostics(net, x, y, self.depth_weight, self.cadence.kernel_memory)
        row.update(self.record.kernels(r, kd, out.data.n_train, out.activation, tau))
        if out.spectrum is not None:
            for decade, count, share in kd.spectrum.decades + [("unresolved", *kd.spectrum.unresolved)]:
                out.spectrum.append({"step": row["step"], "flow_time": row["flow_time"], "decade": decade,
                                     "eigenvalues": count, "residual_share": share})

    def _meter(self, r: int, net, x, y, kd, step: int, tau: float) -> dict:
        """The feature-learning meter against mu_0 on the kernel samples, from the kernel and the states the
        kernel diagnostics kd built; its reference (the initial network, K_0, f_0, its states, K_0's
        eigendecomposition) is computed once, from the record's initial particles (a resumed run gets the
        same one)."""
        from ..diagnostics import feature_learning as FL
        from ..model.layered import MeanFieldResNet

        if r not in self._references:
            p = self.record.members[r].init
            init = MeanFieldResNet({k: p[k].clone() for k in "uwb"}, net.spec, net.embedding.clone(),
                                   net.readout.clone()).detached(dtype="float64")
            kd_0 = kd if step == 0 else D.kernel_diagnostics(init, x, y, self.cadence.kernel_memory, keep_kernel=True)
            eig_0 = kd_0.eig if kd_0.eig is not None else torch.linalg.eigh(kd_0.K)
            self._references[r] = (init, kd_0.K, FL.outputs(init, x), eig_0, kd_0.X)
        init, K_0, f_0, eig_0, X_0 = self._references[r]
        own_flow = x.shape[0] == self.outputs[r].data.n_train and not self.cadence.full_batch_rows
        return FL.meter_row(net, init, x, y, kd.K, K_0, f_0, step, tau if own_flow else None, eig_0, kd.X, X_0)

    def _depth_row(self, r: int, net, row: dict) -> None:
        """The depth marginal's columns, its histogram into depths.csv, and a collapse as an event."""
        from ..diagnostics.depth import depth_histogram, depth_row
        from ..rundir.contract import DEPTH_BINS

        s = net.particles()["s"]
        row.update(depth_row(s, net.L))
        if row["depth_effective_layers"] <= 1.0 and net.L > 1:
            self._event(r, f"step {row['step']}: the depths collapsed (every particle within half a layer of one "
                           "depth: effective layers 1); the network is no longer a ResNet of L layers")
        for i, count in enumerate(depth_histogram(s, DEPTH_BINS).tolist()):
            self.outputs[r].depths.append({"step": row["step"], "flow_time": row["flow_time"], "bin_lo": i / DEPTH_BINS,
                                           "bin_hi": (i + 1) / DEPTH_BINS, "count": count})

    def _event(self, r: int, text: str) -> None:
        """Something a reader must know, once per kind: in the log and the summary's `events`."""
        import logging

        events = self.record.members[r].events
        kind = text.split(": ", 1)[1][:24]
        if not any(e.split(": ", 1)[1].startswith(kind) for e in events):
            events.append(text)
            logging.getLogger("cotresnet").warning(text)

    def _log(self, r: int, row: dict) -> None:
        values = {k: v for k, v in row.items() if v is not None}  # not computed here, or unresolved
        for lg in self.outputs[r].loggers:
            lg.log_metrics(values, step=int(row["step"]))

    def _diverged(self, module, r: int, risk: float) -> None:
        """The row of a member that diverged at this step: its particles stay theta_k, whose risk may still be
        finite (then the row describes them); else the last finite step's row, when it was not logged."""
        module = module.gathered()
        if module is None:
            return
        rec = self.record
        row = rec.diverged_row(r, risk, module.tau(r))
        if row is not None:
            row.update(D.evaluate_members(module.net, self.data, [r])[r])  # no kernels: they would overflow
        else:
            row = rec.step_row(r)
            if not row or row["step"] <= rec.members[r].last_row.get("step", -1):
                return
        self._log(r, rec.log_row(r, row))

    def final_rows(self, module) -> None:
        """The row of each member's final particles, theta_steps with its own step count (none for a diverged
        flow), every diagnostic switched on; `module` holds the whole network (module.gathered())."""
        rows = {}
        for r in range(self.record.R):
            if self.record.status_of(r) == "diverged":
                continue
            out, net = self.outputs[r], module.member_net(r)
            risk, G = D.risk_and_grad_norm2(net, out.data.x_train, out.data.y_train, self.depth_weight)
            row = self.record.final(r, self.record.steps(r), risk, G, module.tau(r))
            if row is not None:
                rows[r] = row
        if rows:
            self._log_rows(module, list(rows), -1, final=True, rows=rows)

    def state_dict(self):
        return self.record.state_dict()

    def load_state_dict(self, state):
        converge_ratio = self.record.converge_ratio  # this run's, which may differ from the checkpoint's
        self.record.load_state_dict(state)
        self.record.reopen(converge_ratio)
