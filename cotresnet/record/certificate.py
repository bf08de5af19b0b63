"""The local P-Ł certificate of docs/math.md, made measurable, with the conditions under which it is a
theorem about the run."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

SMOOTH_ACTIVATIONS = ("tanh", "silu", "gelu", "softplus")
# a step of flow time tau follows the flow along the kernel's fastest direction to first order while
# tau lambda_max / n << 1; at 2 the discrete step is unstable there
CONTINUOUS_TIME_LIMIT = 0.1


@dataclass
class Certificate:
    """c0 = lambda_min(K(mu_0)) / n, R0 = 2 sqrt(L(mu_0) / c0).

    It exists only when lambda_min(K(mu_0)) is resolved (above `resolution`). `kind` is "full" when K
    is the kernel of the whole training set the flow trains on, "probe" when it is the kernel of the
    first n samples only (it then bounds that subset's risk, not the flow's). `inside`: the path stayed
    shorter than R0 and lambda_min(K(mu_t)) >= lambda_min(K(mu_0)) / 2 at every kernel step.

    The theorem (exponential decay at rate c0 inside the region) is about the exact flow of a smooth
    activation on the kernel's own samples: `conditions` says which of those hold for this run (the
    activation, the kernel's kind, the resolution of lambda_0, and whether the step tau follows the flow
    along the fastest direction, tau lambda_max(K(mu_0)) / n <= CONTINUOUS_TIME_LIMIT).
    """

    kind: str
    n: int
    n_train: int
    lambda0: float
    resolution: float
    risk0: float
    inside: bool = True
    activation: str = "tanh"
    lambda_max: float = math.nan
    tau: float = math.nan

    @property
    def c0(self) -> Optional[float]:
        return self.lambda0 / self.n if self.lambda0 > self.resolution else None

    @property
    def radius(self) -> Optional[float]:
        return 2.0 * math.sqrt(self.risk0 / self.c0) if self.c0 else None

    @property
    def step_over_flow(self) -> float:
        """tau lambda_max(K(mu_0)) / n: the step's size along the kernel's fastest direction."""
        return self.tau * self.lambda_max / self.n

    def conditions(self) -> Dict[str, bool]:
        """Each condition of the theorem, for this run."""
        return {"smooth_activation": self.activation in SMOOTH_ACTIVATIONS, "full_kernel": self.kind == "full",
                "resolved": self.c0 is not None, "continuous_time": self.step_over_flow <= CONTINUOUS_TIME_LIMIT}

    @property
    def inside_theory(self) -> bool:
        return all(self.conditions().values())

    def summary(self, flow_time: float, observed_factor: Optional[float]) -> dict:
        c0 = self.c0
        return {"kind": self.kind, "n": self.n, "n_train": self.n_train, "lambda_min_tangent_init": self.lambda0,
                "resolution": self.resolution, "resolved": c0 is not None, "risk_init": self.risk0, "c0": c0,
                "certified_radius": self.radius, "inside_certified_region": self.inside if c0 else None,
                "guaranteed_factor": math.exp(-c0 * flow_time) if c0 else None, "observed_factor": observed_factor,
                "activation": self.activation, "step_over_flow": self.step_over_flow,
                "conditions": self.conditions(), "inside_theory": self.inside_theory}
