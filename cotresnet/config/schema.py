"""The typed configuration schema (conf/train.yaml composes it; docs in README "Configuration").

The dataclasses are registered in Hydra's ConfigStore as the schema of `conf/train.yaml`, so wrong
types fail at composition; `validate.py` checks ranges, choices and anything a type cannot express.
Importing this module imports no torch (shell completion stays fast).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

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
DEPTH_KERNELS = ("gaussian", "bump", "triweight")
GEOMETRIES = ("cot", "wasserstein")
PLOT_FORMATS = ("png", "pdf", "svg")
ACCELERATORS = ("cpu", "gpu", "cuda", "auto")
STRATEGIES = ("auto", "ddp")  # auto: one process, or ddp when trainer.devices x trainer.num_nodes > 1
SEED_MAX = 2**31 - 1  # every RNG we seed (torch, numpy, python, wandb) accepts it
# keys that do not change tensor shapes: a sweep over them can run as replicas inside one job
VECTORIZABLE = ("seed", "init.scale_u", "init.scale_w", "init.scale_b", "optim.dt", "data.seed",
                "data.teacher.scale", "data.teacher.noise")


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
    depth_kernel: Optional[str] = None  # null: L layers; gaussian | bump | triweight: particles with depths (docs/math.md 5)
    bandwidth: float = 0.1  # h of the depth kernel


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
    dt: float = 0.1  # the flow's time step under mean_field; flow time t = step * dt
    parameterization: str = "mean_field"  # mean_field: theta -= dt L M grad; standard: theta -= dt grad
    batch_size: Optional[int] = None  # None: full batch (the gradient flow); else minibatch SGD
    geometry: str = "cot"  # cot: particles keep their depth; wasserstein: depths move too (model.depth_kernel)
    depth_weight: float = 1.0  # kappa, the Wasserstein metric's weight on the depth direction (1: plain W_2)


@dataclass
class TrainerConfig:
    max_steps: int = 1500
    flow_time: Optional[float] = None  # T: train for max_steps = T / (a step's flow time); null: max_steps
    accelerator: str = "cpu"
    log_every: int = 25  # steps between rows of metrics.csv
    converge_ratio: float = 1e-4  # stop as `converged` once risk_train <= ratio * initial risk
    fail_on_divergence: bool = False
    matmul_precision: str = "highest"
    compile: str = "none"  # none | default | reduce-overhead (CUDA graphs; static full-batch shapes)
    threads: Optional[int] = None  # intra-op threads; None: fitted to the CPUs this job has and its size
    devices: int = 1  # ranks per node (processes; one GPU each with accelerator=gpu)
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp: ranks = devices x num_nodes, in process groups (docs/math.md "Many processes")
    particle_parallel: int = 1  # S: ranks sharing the M particles of every layer; the other factor splits the samples
    oversubscribe: bool = False  # allow more CPU ranks on a node than it has cores
    progress: str = "auto"  # auto (a live line on a terminal, log lines otherwise) | bar | log | none
    extra: Dict[str, Any] = field(default_factory=dict)  # further lightning.Trainer options


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
    quiet: bool = True  # wandb's own console output off


@dataclass
class LoggerConfig:
    csv: Optional[CSVLoggerConfig] = None
    tensorboard: Optional[TensorBoardLoggerConfig] = None
    wandb: Optional[WandbLoggerConfig] = None


@dataclass
class CallbacksConfig:
    """Intervals in training steps; 0 switches a diagnostic off."""

    kernel_every: int = 500  # COT tangent kernel and feature kernels
    ot_every: int = 500  # W_COT to the initialization
    n_probe: Optional[int] = None  # kernel samples; None: the whole training set while n d_out <= kernel_max_dim
    kernel_max_dim: int = 2048  # largest tangent kernel (n d_out) built by default
    kernel_memory_mb: int = 1024  # the kernels are built in blocks whose temporaries stay within this


@dataclass
class SweepConfig:
    """sweep.vectorize=[seed,init.scale_u] next to a multirun: the values of those keys run as replicas
    inside one job (one batched matmul per layer), each replica with its own run directory.
    `replicas` is filled by the sweeper: one 'key=value key=value' string per replica."""

    vectorize: List[str] = field(default_factory=list)
    replicas: List[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    root: str = "."  # where runs and sweeps go (a shared filesystem on a cluster)
    runs: str = "${paths.root}/outputs"
    sweeps: str = "${paths.root}/multirun"


@dataclass
class ReportConfig:
    metrics: List[str] = field(default_factory=list)  # what the sweep report draws; empty: its defaults
    x: Optional[str] = None  # the report's primary axis as a ratio of two keys, e.g. model.M/data.n_train
    at_end: bool = True  # a sweep writes its report (figures, report.html) when it ends


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
    paths: PathsConfig = field(default_factory=PathsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    seed: int = 0  # particles' initialization (and minibatch order)
    resume: str = "auto"  # never | auto (the run directory's last checkpoint, if any) | a checkpoint path
    checkpoint_every: int = 0  # steps between checkpoints; 0: only the final one
    overwrite: bool = False  # replace a different run found in the run directory (its files go first)
    tags: List[str] = field(default_factory=list)
    plots: Optional[List[str]] = None  # the run figure's formats; None: png for a single run, none in a sweep
    optimized_metric: Optional[str] = None  # the job returns this final metric (Hydra's optimizing sweepers)
    name: str = "train"


def register() -> None:
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
