"""Values derived from a configuration and the data's shape alone (no torch): what a run, its report and its
audit must agree on."""
from __future__ import annotations

MAX_STEPS_DEFAULT = 1500  # the schema's trainer.max_steps, which trainer.flow_time may replace


def flow_time_steps(cfg) -> int:
    """The step budget of a configuration: trainer.max_steps, or with trainer.flow_time = T the steps that
    cover T at the flow time of one step (optim.dt under mean_field, dt / (L M) under standard), rounded to
    the nearest integer (at least 1)."""
    T = cfg.trainer.flow_time
    if T is None:
        return cfg.trainer.max_steps
    tau = cfg.optim.dt if cfg.optim.parameterization == "mean_field" else cfg.optim.dt / (cfg.model.L * cfg.model.M)
    return max(1, round(T / tau))


def kernel_samples(callbacks, n_train: int, d_out: int) -> int:
    """How many training samples the kernels use: callbacks.n_probe, or the whole training set while the
    tangent kernel (n d_out square) stays within callbacks.kernel_max_dim."""
    if callbacks.n_probe is not None:
        return min(callbacks.n_probe, n_train)
    return max(1, min(n_train, callbacks.kernel_max_dim // d_out))
