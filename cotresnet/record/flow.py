"""The flows' running record (docs/math.md, "Training is the COT flow"). No Lightning here.

`FlowRecord` keeps what the diagnostics accumulate along the flows of one job, one network or the R
replicas of a vectorized job, as (R,) float64 arrays on the host (numpy: an operation on a few numbers costs
a microsecond, a torch one several): every step updates all members at once (the totals, the P-Ł minimum,
the divergence and convergence tests). What a flow needs rarely (its rows, its
certificate, its feature eigenvalues, its initial particles, its events) is kept per member.

Step k describes the particles theta_k before the k-th update. A member's status: running until a stop:
converged (risk <= converge_ratio * risk0), diverged (non-finite risk, gradient or step), interrupted (a
signal), max_steps (the step budget ran out), failed (an exception). A member that converges or diverges at
step k keeps theta_k: the rule holds for the particles it reports. A member's own step count lags the job's
by `offset` once it was reopened (it waited, stopped, while the job stepped on).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from ..diagnostics.measures import KernelDiagnostics
from .certificate import Certificate

STATUSES = ("running", "converged", "diverged", "max_steps", "interrupted")
RUNNING, CONVERGED, DIVERGED, MAX_STEPS, INTERRUPTED = range(len(STATUSES))
# the per-step values a row is made of, kept for every member at its last finite step
STEP_VALUES = ("step", "flow_time", "risk_train", "grad_norm2", "pl_ratio", "path_length", "risk_predicted",
               "depth_path_length")


def _members(value, n: int) -> np.ndarray:
    """A per-member float64 array (R,) from a number, a sequence or a tensor."""
    if isinstance(value, np.ndarray) and value.shape == (n,) and value.dtype == np.float64:
        return value  # the per-step path: the callback's own arrays, never written to here
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (n,)).copy()


@dataclass
class Member:
    """What one flow keeps besides its per-step totals."""

    last_row: Dict[str, Optional[float]] = field(default_factory=dict)  # the last row logged
    certificate: Optional[Certificate] = None
    feature_layers: Dict[str, Optional[List[Optional[float]]]] = field(
        default_factory=lambda: {"init": None, "final": None})
    init: Optional[Dict[str, Tensor]] = None  # mu_0's particles {u, w, b[, s]}, for the distances
    events: List[str] = field(default_factory=list)  # what a reader must know: depths collapsed, ...


class FlowRecord:
    """The running state of the flows of one job (module doc). `converge_ratio`: one, or one per member."""

    def __init__(self, converge_ratio=0.0, members: int = 1, depth: bool = False):
        R = members
        self.converge_ratio = _members(converge_ratio, R)
        self.risk0 = np.full(R, math.nan)
        self.fidelity_integral = np.zeros(R)
        self.path_length = np.zeros(R)
        self.depth_path_length = np.zeros(R) if depth else None
        self.min_pl_ratio = np.full(R, math.inf)
        self.status = np.full(R, RUNNING, dtype=np.int64)
        self.stopped_at = np.full(R, -1, dtype=np.int64)
        self.diverged_at = np.full(R, -1, dtype=np.int64)
        self.offset = np.zeros(R, dtype=np.int64)
        self.job_steps = 0  # steps the job has taken (a reopened member resumes its own count from here)
        self.last = {k: np.full(R, math.nan) for k in STEP_VALUES}  # every member's last finite step
        self.members = [Member() for _ in range(R)]

    @property
    def R(self) -> int:
        return len(self.members)

    @property
    def running(self) -> np.ndarray:
        return self.status == RUNNING

    @property
    def done(self) -> bool:
        """Every flow stopped by its own rule (converged or diverged): the job can end."""
        return not bool(self.running.any())

    def status_of(self, r: int) -> str:
        return STATUSES[int(self.status[r])]

    def step(self, step: int, risk, G, tau, step_length, depth_step=None) -> np.ndarray:
        """Record step k for every running member: (risk, G) of theta_k, tau the step's flow time, step_length
        an upper bound of its length in the flow's metric, depth_step its depth part (depth-mobile particles);
        each a number, a sequence or an (R,) array. Returns the (R,) mask of the members that take this step
        (running and finite: a row of theta_k); a running member with a non-finite value diverges here, one
        whose risk meets its rule converges here, and neither moves (`moving`)."""
        R = self.R
        risk, G, tau, length = (_members(v, R) for v in (risk, G, tau, step_length))
        depth = _members(0.0 if depth_step is None else depth_step, R)
        self.job_steps = step + 1
        own = step - self.offset
        running = self.running
        if running.all() and np.isfinite(risk).all() and np.isfinite(G).all() and np.isfinite(length).all() \
                and np.isfinite(depth).all() and (risk > 0).all() and not np.isnan(self.risk0).any():
            return self._step_all(own, risk, G, tau, length, depth)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            finite = np.isfinite(risk) & np.isfinite(G) & np.isfinite(length) & np.isfinite(depth)
            self.status[running & ~finite] = DIVERGED
            self.diverged_at[running & ~finite] = own[running & ~finite]
            ok = running & finite
            self.risk0 = np.where(ok & np.isnan(self.risk0), risk, self.risk0)
            ratio = np.where(risk > 0, G / risk, math.inf)
            converged = ok & (self.converge_ratio > 0) & (risk <= self.converge_ratio * self.risk0)
            moves = ok & ~converged
            values = {"step": own.astype(np.float64), "flow_time": own * tau, "risk_train": risk, "grad_norm2": G,
                      "pl_ratio": np.where(risk > 0, G / risk, math.nan), "path_length": self.path_length,
                      "risk_predicted": self.risk0 * np.exp(-self.fidelity_integral),
                      "depth_path_length": self.depth_path_length if self.depth_path_length is not None
                      else np.full(R, math.nan)}
            for k, v in values.items():
                self.last[k] = np.where(ok, v, self.last[k])
            self.min_pl_ratio = np.where(ok, np.minimum(self.min_pl_ratio, ratio), self.min_pl_ratio)
            self.fidelity_integral = self.fidelity_integral + np.where(moves, tau * ratio, 0.0)
            self.path_length = self.path_length + np.where(moves, length, 0.0)
            if self.depth_path_length is not None:
                self.depth_path_length = self.depth_path_length + np.where(moves, depth, 0.0)
        self.status[converged] = CONVERGED
        self.stopped_at[converged] = own[converged]
        return ok

    def _step_all(self, own, risk, G, tau, length, depth) -> np.ndarray:
        """step() when every member runs and every value is finite (nearly every step): the same updates,
        without the masks unless a member converges."""
        converged = (self.converge_ratio > 0) & (risk <= self.converge_ratio * self.risk0)
        stops = bool(converged.any())
        ratio = G / risk
        gain = tau * ratio
        if stops:  # a member stopping here keeps theta_k: this step adds nothing to its totals
            length, depth, gain = (np.where(converged, 0.0, v) for v in (length, depth, gain))
        last = self.last
        last["step"][:], last["flow_time"], last["risk_train"], last["grad_norm2"] = own, own * tau, risk, G
        last["pl_ratio"], last["path_length"] = ratio, self.path_length
        last["risk_predicted"] = self.risk0 * np.exp(-self.fidelity_integral)
        if self.depth_path_length is not None:
            last["depth_path_length"] = self.depth_path_length
            self.depth_path_length = self.depth_path_length + depth
        np.minimum(self.min_pl_ratio, ratio, out=self.min_pl_ratio)
        self.fidelity_integral = self.fidelity_integral + gain
        self.path_length = self.path_length + length
        if stops:
            self.status[converged] = CONVERGED
            self.stopped_at[converged] = own[converged]
        return np.ones(self.R, dtype=bool)

    def step_row(self, r: int) -> Dict[str, Optional[float]]:
        """Member r's row of its last finite step (the cheap per-step columns); {} before any."""
        if math.isnan(self.last["step"][r]):
            return {}
        row = {k: float(v[r]) for k, v in self.last.items()}
        row["step"] = int(row["step"])
        if self.depth_path_length is None:
            del row["depth_path_length"]
        return row

    def final(self, r: int, steps: int, risk: float, G: float, tau: float) -> Optional[Dict[str, float]]:
        """Member r's row of its final particles after `steps` steps; None (diverged) when not finite."""
        if not (math.isfinite(risk) and math.isfinite(G)):
            self.status[r], self.diverged_at[r] = DIVERGED, steps
            return None
        if math.isnan(self.risk0[r]):
            self.risk0[r] = risk
        self.min_pl_ratio[r] = min(float(self.min_pl_ratio[r]), G / risk if risk > 0 else math.inf)  # every row
        ratio = float(self.converge_ratio[r])
        if ratio > 0 and risk <= ratio * float(self.risk0[r]):
            self.status[r] = CONVERGED
        row = {"step": steps, "flow_time": steps * tau, "risk_train": risk, "grad_norm2": G,
               "pl_ratio": G / risk if risk > 0 else math.nan, "path_length": float(self.path_length[r]),
               "risk_predicted": float(self.risk0[r] * np.exp(-self.fidelity_integral[r]))}
        if self.depth_path_length is not None:
            row["depth_path_length"] = float(self.depth_path_length[r])
        return row

    def diverged_row(self, r: int, risk: float, tau: float) -> Optional[Dict[str, Optional[float]]]:
        """The row of the particles a diverged member keeps (theta at its divergence step) when their risk is
        finite (their gradient or step was not); None when it is not."""
        if not math.isfinite(risk):
            return None
        step = int(self.diverged_at[r])
        row = {"step": step, "flow_time": step * tau, "risk_train": risk, "grad_norm2": None, "pl_ratio": None,
               "path_length": float(self.path_length[r]),
               "risk_predicted": float(self.risk0[r] * np.exp(-self.fidelity_integral[r]))}
        if self.depth_path_length is not None:
            row["depth_path_length"] = float(self.depth_path_length[r])
        return row

    def reopen(self, converge_ratio) -> None:
        """Continue flows stopped by a rule that no longer holds: a run resumed with a smaller converge_ratio."""
        self.converge_ratio = _members(converge_ratio, self.R)
        risk = self.last["risk_train"]
        holds = (self.converge_ratio > 0) & (risk <= self.converge_ratio * self.risk0)
        reopen = (self.status == CONVERGED) & ~holds
        self.offset[reopen] += self.job_steps - self.stopped_at[reopen]
        self.status[reopen], self.stopped_at[reopen] = RUNNING, -1

    def kernels(self, r: int, kd: KernelDiagnostics, n_train: int, activation: str,
                tau: float) -> Dict[str, Optional[float]]:
        """Member r's kernel columns of a row; the first call sets its certificate, later ones check its region."""
        m = self.members[r]
        feats = [e.reported for e in kd.feature]
        if m.certificate is None:
            m.certificate = Certificate("full" if kd.n == n_train else "probe", kd.n, n_train, kd.lambda_min.value,
                                        kd.lambda_min.resolution, kd.risk, activation=activation,
                                        lambda_max=kd.lambda_max, tau=tau)
            m.feature_layers["init"] = feats
        m.feature_layers["final"] = feats
        out = kd.row()
        c = m.certificate
        if c.c0:
            out["lambda_ratio"] = kd.lambda_min.value / c.lambda0
            if out["lambda_ratio"] < 0.5:
                c.inside = False
        return out

    def log_row(self, r: int, row: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
        """Complete member r's row that is about to be logged (its position against R0), keep it as the last."""
        cert = self.members[r].certificate
        if cert is not None and cert.radius and row.get("path_length") is not None:
            row["path_over_radius"] = row["path_length"] / cert.radius
            if row["path_over_radius"] >= 1.0:
                cert.inside = False
        self.members[r].last_row = row
        return row

    def finish(self, steps: int, interrupted: bool = False) -> None:
        """Training ended at `steps` steps taken: the step budget ran out (or a signal stopped it)."""
        running = self.running
        self.status[running] = INTERRUPTED if interrupted else MAX_STEPS
        unset = (self.stopped_at < 0) & (self.status != DIVERGED)
        self.stopped_at[unset] = steps - self.offset[unset]

    def steps(self, r: int) -> int:
        """Steps member r took: its particles are theta_steps (a diverged flow keeps those it diverged at)."""
        return int(self.diverged_at[r]) if self.status[r] == DIVERGED else max(int(self.stopped_at[r]), 0)

    def summary(self, r: int, tau: float) -> dict:
        """Member r's part of summary.json (the job adds wall time, versions, ...)."""
        m = self.members[r]
        final, steps = dict(m.last_row), self.steps(r)
        risk0 = None if math.isnan(self.risk0[r]) else float(self.risk0[r])
        risk_final = final.get("risk_train")
        observed = risk_final / risk0 if risk0 and risk_final is not None else None
        min_pl = float(self.min_pl_ratio[r])
        return {"status": self.status_of(r), "steps": steps, "flow_time": steps * tau,
                "diverged_at": steps if self.status[r] == DIVERGED else None, "particles_step": steps,
                "final": final, "risk_init": risk0, "min_pl_ratio": min_pl if math.isfinite(min_pl) else None,
                "certificate": m.certificate.summary(steps * tau, observed) if m.certificate else None,
                "lambda_min_feature_layers": dict(m.feature_layers), "events": list(m.events)}

    def state_dict(self) -> dict:
        """The record as tensors and plain containers (a checkpoint loads with weights_only)."""
        arrays = ("converge_ratio", "risk0", "fidelity_integral", "path_length", "depth_path_length",
                  "min_pl_ratio", "status", "stopped_at", "diverged_at", "offset")
        tensor = lambda a: None if a is None else torch.from_numpy(a.copy())
        return {**{k: tensor(getattr(self, k)) for k in arrays}, "job_steps": self.job_steps,
                "last": {k: tensor(v) for k, v in self.last.items()},
                "members": [{**asdict(m), "certificate": asdict(m.certificate) if m.certificate else None}
                            for m in self.members]}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        members = state.pop("members")
        array = lambda t: None if t is None else t.numpy().copy()
        self.job_steps = state.pop("job_steps", 0)
        for k, v in state.items():
            setattr(self, k, {n: array(x) for n, x in v.items()} if k == "last" else array(v))
        self.members = [Member(**{**m, "certificate": Certificate(**m["certificate"]) if m["certificate"] else None})
                        for m in members]

