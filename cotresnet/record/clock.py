"""The flow's clock: a step of SGD with learning rate lr moves every particle by -lr dL/dtheta, which is the COT
gradient flow d theta/dt = -L M dL/dtheta run for tau = lr / (L M) units of flow time. `mean_field` sets
lr = dt L M (tau = dt, independent of L and M); `standard` sets lr = dt (tau = dt / (L M))."""
from __future__ import annotations


def learning_rate(dt: float, L: int, M: int, parameterization: str) -> float:
    """The SGD learning rate of a step dt: `mean_field` multiplies by L M, `standard` does not."""
    return dt * L * M if parameterization == "mean_field" else dt


def flow_time_step(dt: float, L: int, M: int, parameterization: str) -> float:
    """tau = lr / (L M): the COT flow time one step covers (dt itself under `mean_field`)."""
    return dt if parameterization == "mean_field" else dt / (L * M)
