"""Typed configuration schema and the checks that run before any output is written.

The dataclasses are registered in Hydra's ConfigStore as the schema of `conf/train.yaml`, so
unknown keys and wrong types fail at composition. `validate` checks ranges and allowed values
that a type cannot express, and names the field, the value and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

ACTIVATIONS = ("tanh", "silu", "gelu", "softplus", "relu")
INTEGRATORS = ("euler", "rk4", "dopri5")
BACKPROP_MODES = ("fused", "recompute", "autograd")
EMBEDDINGS = ("pad", "orthogonal")
READOUTS = ("first", "orthogonal")
INIT_SCHEMES = ("iid", "shared")
PARAMETERIZATIONS = ("mean_field", "standard")
DATASETS = ("teacher", "diabetes", "digits", "wine", "breast_cancer", "file")
TEACHER_INPUTS = ("gaussian", "sphere")
DTYPES = ("float32", "float64")
ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
# keys that do not change tensor shapes: a sweep over them can run as replicas inside one job
VECTORIZABLE = ("seed", "init.scale_u", "init.scale_w", "init.scale_b", "optim.dt", "data.seed",
                "data.teacher.scale", "data.teacher.noise")


class ConfigError(ValueError):
    """A configuration value is not allowed. The message names the field."""


@dataclass
class ModelConfig:
    L: int = 16  # layers (depth discretization)
    M: int = 128  # particles (neurons) per layer
    d: int = 8  # state dimension, >= max(d_in, d_out)
    activation: str = "tanh"
    integrator: str = "euler"  # euler: the ResNet; rk4 / dopri5: torchdiffeq
    substeps: int = 4  # rk4 steps per layer
    rtol: float = 1e-7  # dopri5
    atol: float = 1e-9  # dopri5
    adjoint: bool = False  # odeint_adjoint: memory independent of depth
    backprop: str = "fused"  # euler backward: fused | recompute (states only) | autograd
    embedding: str = "pad"
    readout: str = "first"
    dtype: str = "float32"


@dataclass
class InitConfig:
    scheme: str = "iid"  # iid across layers, or the same M particles in every layer
    scale_u: float = 1.0
    scale_w: float = 1.0
    scale_b: float = 1.0


@dataclass
class TeacherConfig:
    d_in: int = 4
    d_out: int = 2
    d: int = 8
    L: int = 4
    M: int = 4
    scale: float = 2.0  # teacher's scale_u: distance of the target from the identity
    activation: str = "tanh"
    inputs: str = "gaussian"
    noise: float = 0.0


@dataclass
class DataConfig:
    name: str = "teacher"
    n_train: int = 256  # teacher only; bundled datasets use their own size
    n_test: int = 256  # teacher only
    test_fraction: float = 0.25  # bundled datasets
    seed: int = 0
    path: Optional[str] = None  # data.name=file: a data.pt (x_train, y_train, x_test, y_test)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)


@dataclass
class OptimConfig:
    dt: float = 0.1  # the flow's time step; flow time t = step * dt
    parameterization: str = "mean_field"  # mean_field: theta -= dt L M grad; standard: theta -= dt grad
    batch_size: Optional[int] = None  # None: full batch (the gradient flow); else minibatch SGD


@dataclass
class TrainerConfig:
    max_steps: int = 1500
    accelerator: str = "cpu"
    log_every: int = 25  # steps between rows of metrics.csv
    converge_ratio: float = 1e-4  # stop as `converged` once risk_train <= ratio * initial risk
    fail_on_divergence: bool = False
    matmul_precision: str = "highest"
    compile: str = "none"  # none | default | reduce-overhead (CUDA graphs; static full-batch shapes)


@dataclass
class CSVLoggerConfig:
    pass


@dataclass
class TensorBoardLoggerConfig:
    pass


@dataclass
class WandbLoggerConfig:
    project: str = "cotresnet"
    entity: Optional[str] = None
    mode: str = "offline"  # offline by default; `online` is the user's choice
    group: Optional[str] = None  # default: the sweep directory's name
    tags: List[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    csv: Optional[CSVLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None


@dataclass
class CallbacksConfig:
    """Intervals in training steps; 0 switches a diagnostic off."""

    kernel_every: int = 500  # COT tangent kernel and feature kernels
    ot_every: int = 500  # exact W_COT to the initialization
    n_probe: int = 128  # the first n_probe training samples probe the tangent kernel


@dataclass
class SweepConfig:
    """sweep.vectorize=[seed,init.scale_u] next to a multirun: the values of those keys run as replicas
    inside one job (one batched matmul per layer), each replica with its own run directory.
    `replicas` is filled by the sweeper: one 'key=value key=value' string per replica."""

    vectorize: List[str] = field(default_factory=list)
    replicas: List[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    init: InitConfig = field(default_factory=InitConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seed: int = 0  # particles' initialization (and minibatch order)
    resume: str = "auto"  # never | auto (the run directory's last checkpoint, if any) | a checkpoint path
    checkpoint_every: int = 0  # steps between checkpoints; 0: none
    name: str = "train"


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def _choice(path: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _at_least(path: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{path}={value!r} is out of range; it must be >= {low}")


def _positive_finite(path: str, value) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{path}={value!r} is out of range; it must be a finite number > 0")


def _non_negative_finite(path: str, value) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{path}={value!r} is out of range; it must be a finite number >= 0")


def validate(cfg) -> None:
    """Check every value a type cannot check. Raises ConfigError naming the field."""
    m, i, d, o, t, c = cfg.model, cfg.init, cfg.data, cfg.optim, cfg.trainer, cfg.callbacks
    _at_least("model.L", m.L, 1)
    _at_least("model.M", m.M, 1)
    _at_least("model.d", m.d, 1)
    _choice("model.activation", m.activation, ACTIVATIONS)
    _choice("model.integrator", m.integrator, INTEGRATORS)
    _choice("model.backprop", m.backprop, BACKPROP_MODES)
    _at_least("model.substeps", m.substeps, 1)
    _positive_finite("model.rtol", m.rtol)
    _positive_finite("model.atol", m.atol)
    if m.adjoint and m.integrator == "euler":
        raise ConfigError(
            "model.adjoint=true needs an ODE integrator: set model.integrator to rk4 or dopri5 "
            "(with euler the network is the ResNet itself and backprop is exact)"
        )
    if m.backprop == "recompute" and m.integrator != "euler":
        raise ConfigError(
            f"model.backprop=recompute applies to model.integrator=euler (got {m.integrator}); for ODE "
            "integrators set model.adjoint=true, whose memory does not grow with depth"
        )
    _choice("model.embedding", m.embedding, EMBEDDINGS)
    _choice("model.readout", m.readout, READOUTS)
    _choice("model.dtype", m.dtype, DTYPES)
    _choice("init.scheme", i.scheme, INIT_SCHEMES)
    for key in ("scale_u", "scale_w", "scale_b"):
        _non_negative_finite(f"init.{key}", getattr(i, key))
    _choice("data.name", d.name, DATASETS)
    _at_least("data.n_train", d.n_train, 1)
    _at_least("data.n_test", d.n_test, 0)
    if not 0.0 <= d.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction={d.test_fraction!r} is out of range; it must be in [0, 1)")
    tc = d.teacher
    for key in ("d_in", "d_out", "d", "L", "M"):
        _at_least(f"data.teacher.{key}", getattr(tc, key), 1)
    if tc.d < max(tc.d_in, tc.d_out):
        raise ConfigError(
            f"data.teacher.d={tc.d} is smaller than the teacher's data: it must be >= max(d_in, d_out) = "
            f"{max(tc.d_in, tc.d_out)}"
        )
    _non_negative_finite("data.teacher.scale", tc.scale)
    _non_negative_finite("data.teacher.noise", tc.noise)
    _choice("data.teacher.activation", tc.activation, ACTIVATIONS)
    _choice("data.teacher.inputs", tc.inputs, TEACHER_INPUTS)
    _positive_finite("optim.dt", o.dt)
    _choice("optim.parameterization", o.parameterization, PARAMETERIZATIONS)
    if o.batch_size is not None:
        _at_least("optim.batch_size", o.batch_size, 1)
    _at_least("trainer.max_steps", t.max_steps, 1)
    _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    _at_least("trainer.log_every", t.log_every, 1)
    _non_negative_finite("trainer.converge_ratio", t.converge_ratio)
    _choice("trainer.matmul_precision", t.matmul_precision, ("highest", "high", "medium"))
    _choice("trainer.compile", t.compile, ("none", "default", "reduce-overhead"))
    if cfg.logger.wandb is not None:
        _choice("logger.wandb.mode", cfg.logger.wandb.mode, ("offline", "online", "disabled"))
    _at_least("callbacks.kernel_every", c.kernel_every, 0)
    _at_least("callbacks.ot_every", c.ot_every, 0)
    _at_least("callbacks.n_probe", c.n_probe, 1)
    _at_least("checkpoint_every", cfg.checkpoint_every, 0)
    _at_least("seed", cfg.seed, 0)
    for key in cfg.sweep.vectorize:
        if key not in VECTORIZABLE:
            raise ConfigError(f"sweep.vectorize: {key!r} cannot run as replicas (it changes tensor shapes or the "
                              f"model); allowed: {', '.join(VECTORIZABLE)}")
    if cfg.sweep.vectorize or cfg.sweep.replicas:
        if m.integrator != "euler" or m.adjoint:
            raise ConfigError("sweep.vectorize needs model.integrator=euler and model.adjoint=false "
                              f"(got {m.integrator}, adjoint={m.adjoint})")
        if o.batch_size is not None:
            raise ConfigError("sweep.vectorize needs full-batch training: set optim.batch_size=null")


def validate_against_data(cfg, d_in: int, d_out: int, n_train: int) -> None:
    """Checks that need the dataset's shape (known before any output is written)."""
    if cfg.model.d < max(d_in, d_out):
        raise ConfigError(
            f"model.d={cfg.model.d} is smaller than the data of data.name={cfg.data.name!r} "
            f"(d_in={d_in}, d_out={d_out}); it must be >= {max(d_in, d_out)}"
        )
    if cfg.callbacks.n_probe > n_train and cfg.callbacks.kernel_every > 0:
        raise ConfigError(
            f"callbacks.n_probe={cfg.callbacks.n_probe} is larger than the training set "
            f"({n_train} samples of data.name={cfg.data.name!r}); it must be <= {n_train}"
        )
    if cfg.optim.batch_size is not None and cfg.optim.batch_size > n_train:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} is larger than the training set ({n_train}); "
            f"it must be <= {n_train}"
        )
