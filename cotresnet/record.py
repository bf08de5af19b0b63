"""The flow's clock and its running record (docs/math.md, "Training is the COT flow"). No Lightning here.

A step of SGD with learning rate lr moves every particle by -lr dL/dtheta, which is the COT gradient
flow d theta/dt = -L M dL/dtheta run for tau = lr / (L M) units of flow time. `mean_field` sets
lr = dt L M (tau = dt, independent of L and M); `standard` sets lr = dt (tau = dt / (L M)).
`FlowRecord` keeps what the diagnostics accumulate along one flow and decides its status.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from .diagnostics.measures import KernelDiagnostics, fidelity_prediction


def learning_rate(dt: float, L: int, M: int, parameterization: str) -> float:
    """The SGD learning rate of a step dt: `mean_field` multiplies by L M, `standard` does not."""
    return dt * L * M if parameterization == "mean_field" else dt


def flow_time_step(dt: float, L: int, M: int, parameterization: str) -> float:
    """tau = lr / (L M): the COT flow time one step covers (dt itself under `mean_field`)."""
    return dt if parameterization == "mean_field" else dt / (L * M)


@dataclass
class Certificate:
    """The local P-L certificate of docs/math.md: c0 = lambda_min(K(mu_0)) / n, R0 = 2 sqrt(L(mu_0) / c0).

    It exists only when lambda_min(K(mu_0)) is resolved (above `resolution`). `kind` is "full" when K
    is the kernel of the whole training set the flow trains on (a theorem for the exact flow, while
    the path stays shorter than R0 and lambda_min(K(mu_t)) >= lambda_min(K(mu_0)) / 2), "probe" when it
    is the kernel of the first n samples only (it then bounds that subset's risk, not the flow's).
    """

    kind: str
    n: int
    n_train: int
    lambda0: float
    resolution: float
    risk0: float
    inside: bool = True

    @property
    def c0(self) -> Optional[float]:
        return self.lambda0 / self.n if self.lambda0 > self.resolution else None

    @property
    def radius(self) -> Optional[float]:
        return 2.0 * math.sqrt(self.risk0 / self.c0) if self.c0 else None

    def summary(self, flow_time: float, observed_factor: Optional[float]) -> dict:
        c0 = self.c0
        return {"kind": self.kind, "n": self.n, "n_train": self.n_train, "lambda_min_tangent_init": self.lambda0,
                "resolution": self.resolution, "resolved": c0 is not None, "risk_init": self.risk0, "c0": c0,
                "certified_radius": self.radius, "inside_certified_region": self.inside if c0 else None,
                "guaranteed_factor": math.exp(-c0 * flow_time) if c0 else None, "observed_factor": observed_factor}


@dataclass
class FlowRecord:
    """The running state of one flow (a network, or one replica of a vectorized job).

    Step k describes the particles theta_k before the k-th update. `status`: running until a stop:
    converged (risk <= converge_ratio * risk0), diverged (non-finite risk, gradient or step),
    interrupted (a signal), max_steps (the step budget ran out), failed (an exception).
    """

    converge_ratio: float = 0.0
    risk0: Optional[float] = None
    fidelity_integral: float = 0.0
    path_length: float = 0.0
    min_pl_ratio: float = math.inf
    status: str = "running"
    stopped_at: Optional[int] = None
    diverged_at: Optional[int] = None
    last_row: Dict[str, float] = field(default_factory=dict)
    last_step_row: Dict[str, float] = field(default_factory=dict)
    certificate: Optional[Certificate] = None
    feature_layers: Dict[str, Optional[List[Optional[float]]]] = field(
        default_factory=lambda: {"init": None, "final": None})
    init: Optional[Dict[str, object]] = None  # mu_0's particles {u, w, b}, for the distances
    depth_path_length: Optional[float] = None  # depth-mobile particles: the depth distance travelled

    @property
    def done(self) -> bool:
        return self.status in ("converged", "diverged")

    def step(self, step: int, risk: float, G: float, tau: float, step_length: float,
             depth_step: Optional[float] = None) -> Optional[Dict[str, float]]:
        """Record step k: (risk, G) of theta_k, tau the step's flow time, step_length its length in the flow's
        metric, depth_step its depth part (depth-mobile particles). Returns the step's row, or None when it
        diverged."""
        if not all(math.isfinite(v) for v in (risk, G, step_length, depth_step or 0.0)):
            self.status, self.diverged_at = "diverged", step
            return None
        if self.risk0 is None:
            self.risk0 = risk
        ratio = G / risk if risk > 0 else math.inf
        row = self.last_step_row = self._row(step, risk, G, tau)
        self.min_pl_ratio = min(self.min_pl_ratio, ratio)
        self.fidelity_integral += tau * ratio
        self.path_length += step_length
        if depth_step is not None:
            self.depth_path_length = (self.depth_path_length or 0.0) + depth_step
        if self.converge_ratio > 0 and risk <= self.converge_ratio * self.risk0:
            self.status, self.stopped_at = "converged", step + 1
        return row

    def _row(self, step: int, risk: float, G: float, tau: float) -> Dict[str, float]:
        return {"step": step, "flow_time": step * tau, "risk_train": risk, "grad_norm2": G,
                "pl_ratio": G / risk if risk > 0 else math.nan, "path_length": self.path_length,
                "risk_predicted": fidelity_prediction(self.risk0, self.fidelity_integral),
                "depth_path_length": self.depth_path_length}

    def final(self, steps: int, risk: float, G: float, tau: float) -> Optional[Dict[str, float]]:
        """The row of the final particles after `steps` steps; None (diverged) when it is not finite."""
        if not (math.isfinite(risk) and math.isfinite(G)):
            self.status, self.diverged_at = "diverged", steps
            return None
        if self.risk0 is None:
            self.risk0 = risk
        self.min_pl_ratio = min(self.min_pl_ratio, G / risk if risk > 0 else math.inf)  # over every row
        if self.converge_ratio > 0 and risk <= self.converge_ratio * self.risk0:
            self.status = "converged"
        return self._row(steps, risk, G, tau)

    def reopen(self, converge_ratio: float) -> None:
        """Continue a flow stopped by a rule that no longer holds: a run resumed with a smaller converge_ratio."""
        self.converge_ratio = converge_ratio
        risk = self.last_step_row.get("risk_train")
        if self.status == "converged" and not (converge_ratio > 0 and risk is not None and risk <= converge_ratio * self.risk0):
            self.status, self.stopped_at = "running", None

    def kernels(self, kd: KernelDiagnostics, n_train: int) -> Dict[str, Optional[float]]:
        """Kernel columns of a row; the first call sets the certificate, later ones check its region."""
        feats = [e.reported for e in kd.feature]
        if self.certificate is None:
            self.certificate = Certificate("full" if kd.n == n_train else "probe", kd.n, n_train,
                                           kd.lambda_min.value, kd.lambda_min.resolution, kd.risk)
            self.feature_layers["init"] = feats
        self.feature_layers["final"] = feats
        out = kd.row()
        c = self.certificate
        if c.c0:
            out["lambda_ratio"] = kd.lambda_min.value / c.lambda0
            if out["lambda_ratio"] < 0.5:
                c.inside = False
        return out

    def log_row(self, row: Dict[str, float]) -> Dict[str, float]:
        """Complete a row that is about to be logged (its position against R0) and keep it as the last."""
        radius = self.certificate.radius if self.certificate else None
        if radius:
            row["path_over_radius"] = row["path_length"] / radius
            if row["path_over_radius"] >= 1.0:
                self.certificate.inside = False
        self.last_row = row
        return row

    def finish(self, steps: int) -> None:
        """The step budget ran out (or training ended otherwise) at `steps` steps taken."""
        if self.status == "running":
            self.status = "max_steps"
        if self.stopped_at is None and self.status != "diverged":
            self.stopped_at = steps

    @property
    def steps(self) -> int:
        return self.diverged_at if self.status == "diverged" else (self.stopped_at or 0)

    def summary(self, tau: float) -> dict:
        """The flow's part of summary.json (the run directory adds wall time, versions, ...)."""
        final = {k: v for k, v in self.last_row.items()}
        risk_final = final.get("risk_train")
        observed = risk_final / self.risk0 if self.risk0 and risk_final is not None else None
        flow_time = self.steps * tau
        return {"status": self.status, "steps": self.steps, "flow_time": flow_time, "diverged_at": self.diverged_at,
                "final": final, "risk_init": self.risk0,
                "min_pl_ratio": self.min_pl_ratio if math.isfinite(self.min_pl_ratio) else None,
                "certificate": self.certificate.summary(flow_time, observed) if self.certificate else None,
                "lambda_min_feature_layers": dict(self.feature_layers)}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        cert = state.pop("certificate")
        for k, v in state.items():
            setattr(self, k, v)
        self.certificate = Certificate(**cert) if cert else None
