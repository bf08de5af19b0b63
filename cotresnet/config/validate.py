"""The configuration's values, checked without torch or data: ranges and choices, keys outside the
schema (Hydra's `+key=value` adds them past its struct check), replicas, combinations that cannot run.
A refusal is a ConfigError whose message names the field and what is allowed."""
from __future__ import annotations

import math
import re

from ..errors import ConfigError
from . import schema as C
from .keys import resolves_to_its_types, unknown_keys

# lightning.Trainer arguments trainer.extra may not set: the job sets them itself, or they would change
# the step (which is the flow's) or the stop rule, or ask for several devices
OWNED_TRAINER_ARGS = ("max_steps", "max_epochs", "min_steps", "min_epochs", "max_time", "accelerator", "devices",
                      "num_nodes", "strategy", "logger", "callbacks", "enable_progress_bar", "enable_model_summary",
                      "enable_checkpointing", "num_sanity_val_steps", "limit_val_batches", "limit_train_batches",
                      "limit_test_batches", "limit_predict_batches", "overfit_batches", "fast_dev_run",
                      "val_check_interval", "check_val_every_n_epoch", "accumulate_grad_batches", "gradient_clip_val",
                      "gradient_clip_algorithm", "log_every_n_steps", "precision", "default_root_dir", "plugins")


def _choice(path: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{path}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _at_least(path: str, value, low, high=None) -> None:
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{path}={value!r} is out of range; it must be {rng}")


def _finite(path: str, value, positive: bool) -> None:
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ConfigError(f"{path}={value!r} is out of range; it must be a finite number {'>' if positive else '>='} 0")


def validate(cfg) -> None:
    """Check every value a type cannot check. Raises ConfigError naming the field."""
    unknown_keys(cfg)
    resolves_to_its_types(cfg)
    _validate_model(cfg.model)
    i, d, o, t, c = cfg.init, cfg.data, cfg.optim, cfg.trainer, cfg.callbacks
    _choice("init.scheme", i.scheme, C.INIT_SCHEMES)
    for key in ("scale_u", "scale_w", "scale_b"):
        _finite(f"init.{key}", getattr(i, key), positive=False)
    _validate_data(d)
    _finite("optim.dt", o.dt, positive=True)
    _choice("optim.parameterization", o.parameterization, C.PARAMETERIZATIONS)
    _learning_rate_fits(cfg)
    _validate_geometry(cfg)
    if o.batch_size is not None:
        _at_least("optim.batch_size", o.batch_size, 1)
    _validate_trainer(t)
    _validate_layout(cfg)
    _validate_flow_time(cfg)
    if cfg.logger.wandb is not None:
        _choice("logger.wandb.mode", cfg.logger.wandb.mode, ("offline", "online", "disabled"))
    for key in ("kernel_every", "ot_every"):
        _at_least(f"callbacks.{key}", getattr(c, key), 0)
    if c.n_probe is not None:
        _at_least("callbacks.n_probe", c.n_probe, 1)
    _at_least("callbacks.kernel_max_dim", c.kernel_max_dim, 1)
    _at_least("callbacks.kernel_memory_mb", c.kernel_memory_mb, 16)
    _at_least("checkpoint_every", cfg.checkpoint_every, 0)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", cfg.name):  # it names the sweep's directory
        raise ConfigError(f"name={cfg.name!r} is not allowed; it names the sweep directory: use 1-64 letters, digits, "
                          "'.', '_', '+' or '-' (no path separator), starting with a letter or a digit")
    _at_least("seed", cfg.seed, 0, C.SEED_MAX)
    for fmt in cfg.plots or []:
        _choice("plots", fmt, C.PLOT_FORMATS)
    if cfg.optimized_metric is not None:
        from ..rundir.contract import COLUMNS, SUMMARY_METRICS

        _choice("optimized_metric", cfg.optimized_metric, [*COLUMNS[1:], *SUMMARY_METRICS])
    _validate_sweep(cfg)


def _validate_model(m) -> None:
    for key in ("L", "M", "d", "substeps"):
        _at_least(f"model.{key}", getattr(m, key), 1)
    _choice("model.activation", m.activation, C.ACTIVATIONS)
    _choice("model.integrator", m.integrator, C.INTEGRATORS)
    _choice("model.backprop", m.backprop, C.BACKPROP_MODES)
    _finite("model.rtol", m.rtol, positive=True)
    _finite("model.atol", m.atol, positive=True)
    # dopri5 controls the error relative to the state: below the unit roundoff of model.dtype no step can meet
    # it (rtol = 1e-300 ends in torchdiffeq's step-size underflow assertion)
    floor = DTYPE_EPS.get(m.dtype, DTYPE_EPS["float64"]) / 2
    if m.integrator == "dopri5" and m.rtol < floor:
        raise ConfigError(f"model.rtol={m.rtol!r} is out of range; with model.integrator=dopri5 it must be >= "
                          f"{floor:.3g} (the unit roundoff of model.dtype={m.dtype}: a smaller relative error "
                          "cannot be controlled)")
    if m.adjoint and m.integrator == "euler":
        raise ConfigError("model.adjoint=true needs an ODE integrator: set model.integrator to rk4 or dopri5 "
                          "(with euler the network is the ResNet itself and backprop is exact)")
    if m.backprop == "recompute" and m.integrator != "euler":
        raise ConfigError(f"model.backprop=recompute applies to model.integrator=euler (got {m.integrator}); for ODE "
                          "integrators set model.adjoint=true, whose memory does not grow with depth")
    _choice("model.embedding", m.embedding, C.EMBEDDINGS)
    _choice("model.readout", m.readout, C.READOUTS)
    _choice("model.dtype", m.dtype, C.DTYPES)
    _finite("model.bandwidth", m.bandwidth, positive=True)
    if m.bandwidth > 1:  # wider than the depth interval: a flat field that sums ~9 h / 2 reflected images per call
        raise ConfigError(f"model.bandwidth={m.bandwidth!r} is out of range; it must be in (0, 1] (the depth "
                          "interval's length: a wider kernel is flat over [0, 1] and costs ~9 h reflected images "
                          "per evaluation)")
    if m.depth_kernel is not None:
        _choice("model.depth_kernel", m.depth_kernel, C.DEPTH_KERNELS)
        if m.backprop == "recompute":
            raise ConfigError("model.backprop=recompute is the layered Euler ResNet's; with model.depth_kernel the "
                              "network is an ODE in depth: set model.adjoint=true to save memory")


def _validate_geometry(cfg) -> None:
    """The Wasserstein flow moves depths: it needs particles that have one; replicas and compiled steps
    are written for the layered network."""
    m, o = cfg.model, cfg.optim
    _choice("optim.geometry", o.geometry, C.GEOMETRIES)
    _finite("optim.depth_weight", o.depth_weight, positive=True)
    if o.geometry == "wasserstein" and m.depth_kernel is None:
        raise ConfigError("optim.geometry=wasserstein moves particles in depth: set model.depth_kernel to one of "
                          f"{', '.join(C.DEPTH_KERNELS)} (the layered model has no depths to move)")
    if m.depth_kernel is not None:
        if cfg.sweep.vectorize or cfg.sweep.replicas:
            raise ConfigError("sweep.vectorize runs layered networks only; with model.depth_kernel sweep seeds as "
                              "separate jobs (drop sweep.vectorize)")
        if cfg.trainer.compile != "none":
            raise ConfigError("trainer.compile applies to the layered network; with model.depth_kernel use "
                              "trainer.compile=none")


def _validate_data(d) -> None:
    _choice("data.name", d.name, C.DATASETS)
    _at_least("data.n_train", d.n_train, 1)
    _at_least("data.n_test", d.n_test, 0)
    _at_least("data.seed", d.seed, 0, C.SEED_MAX)
    if not 0.0 <= d.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction={d.test_fraction!r} is out of range; it must be in [0, 1)")
    tc = d.teacher
    for key in ("d_in", "d_out", "d", "L", "M"):
        _at_least(f"data.teacher.{key}", getattr(tc, key), 1)
    if tc.d < max(tc.d_in, tc.d_out):
        raise ConfigError(f"data.teacher.d={tc.d} is smaller than the teacher's data: it must be >= max(d_in, d_out) = "
                          f"{max(tc.d_in, tc.d_out)}")
    _finite("data.teacher.scale", tc.scale, positive=False)
    _finite("data.teacher.noise", tc.noise, positive=False)
    _choice("data.teacher.activation", tc.activation, C.ACTIVATIONS)
    _choice("data.teacher.inputs", tc.inputs, C.TEACHER_INPUTS)


# the largest finite number of each model.dtype: SGD multiplies the gradient by the learning rate in it
DTYPE_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}
DTYPE_EPS = {"float32": 1.1920928955078125e-07, "float64": 2.220446049250313e-16}


def _learning_rate_fits(cfg) -> None:
    """The learning rate dt L M (mean_field) must be a finite number of the model's dtype: beyond it the
    optimizer cannot even take the step (a diverging run is `diverged`; this one could not start)."""
    m, o = cfg.model, cfg.optim
    factor = m.L * m.M if o.parameterization == "mean_field" else 1
    top = DTYPE_MAX[m.dtype]
    if o.dt * factor > top:
        raise ConfigError(f"optim.dt={o.dt!r} gives the learning rate dt L M = {o.dt * factor:.3g}, beyond "
                          f"model.dtype={m.dtype}'s largest number; it must be <= {top / factor:.3g}")


def _validate_flow_time(cfg) -> None:
    """trainer.flow_time replaces the step budget: max_steps must be left at its default or agree with it, and
    a vectorized job's replicas share one budget, so their dt (hence their steps) cannot differ."""
    from .derived import MAX_STEPS_DEFAULT, flow_time_steps

    T = cfg.trainer.flow_time
    if T is None:
        return
    _finite("trainer.flow_time", T, positive=True)
    steps = flow_time_steps(cfg)
    if cfg.trainer.max_steps not in (MAX_STEPS_DEFAULT, steps):
        raise ConfigError(f"trainer.flow_time={T!r} sets the step budget ({steps} steps of flow time "
                          f"{T / steps:.4g}) and trainer.max_steps={cfg.trainer.max_steps} another; set one of them")
    if "optim.dt" in cfg.sweep.vectorize or any("optim.dt=" in r for r in cfg.sweep.replicas):
        raise ConfigError("trainer.flow_time with replicas over optim.dt: each dt needs its own step budget; sweep "
                          "optim.dt as separate jobs (drop it from sweep.vectorize)")
    if steps > 10**9:
        raise ConfigError(f"trainer.flow_time={T!r} needs {steps} steps of optim.dt={cfg.optim.dt!r}; it must be "
                          "<= 1e9 steps")


def _validate_trainer(t) -> None:
    _at_least("trainer.max_steps", t.max_steps, 1)
    _choice("trainer.accelerator", t.accelerator, C.ACCELERATORS)
    _at_least("trainer.log_every", t.log_every, 1)
    _finite("trainer.converge_ratio", t.converge_ratio, positive=False)
    if not 0 <= t.converge_ratio < 1:
        raise ConfigError(f"trainer.converge_ratio={t.converge_ratio!r} is out of range; it must be in [0, 1) "
                          "(0: never stop as converged)")
    _choice("trainer.matmul_precision", t.matmul_precision, ("highest", "high", "medium"))
    _choice("trainer.compile", t.compile, ("none", "default", "reduce-overhead"))
    _choice("trainer.progress", t.progress, ("auto", "bar", "log", "none"))
    if t.threads is not None:
        _at_least("trainer.threads", t.threads, 1)
    if t.extra:
        import inspect

        import lightning

        allowed = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self", *OWNED_TRAINER_ARGS}
        for key in t.extra:
            if key not in allowed:
                raise ConfigError(f"trainer.extra.{key} is not a lightning.Trainer option cotresnet leaves open; "
                                  f"allowed: {', '.join(sorted(allowed))}")


def _validate_layout(cfg) -> None:
    """Several ranks (trainer.devices x trainer.num_nodes) run the layered network's full-batch flow: S of them
    share each layer's particles, the others split the samples (config/layout.py)."""
    from .layout import Layout

    t, m = cfg.trainer, cfg.model
    for key in ("devices", "num_nodes", "particle_parallel"):
        _at_least(f"trainer.{key}", getattr(t, key), 1)
    _choice("trainer.strategy", t.strategy, C.STRATEGIES)
    layout = Layout.of(cfg)
    if layout.ranks % layout.S:
        raise ConfigError(f"trainer.particle_parallel={layout.S} must divide the ranks trainer.devices x "
                          f"trainer.num_nodes = {layout.ranks}; set it to one of "
                          f"{', '.join(str(s) for s in range(1, layout.ranks + 1) if layout.ranks % s == 0)}")
    if m.M % layout.S:
        raise ConfigError(f"trainer.particle_parallel={layout.S} must divide model.M={m.M} (each rank holds M / S "
                          "particles of every layer); choose model.M a multiple of it")
    if not layout.parallel:
        return
    several = f"trainer.devices x trainer.num_nodes = {layout.ranks} ranks"
    if m.depth_kernel is not None:
        raise ConfigError(f"{several} run the layered network; with model.depth_kernel use trainer.devices=1 "
                          "trainer.num_nodes=1")
    if cfg.sweep.vectorize or cfg.sweep.replicas:
        raise ConfigError(f"{several} run one network; drop sweep.vectorize (or use trainer.devices=1)")
    if cfg.optim.batch_size is not None:
        raise ConfigError(f"{several} run the full-batch flow; set optim.batch_size=null (minibatch SGD runs in "
                          "one process)")
    if t.compile != "none":
        raise ConfigError(f"{several} run eagerly; set trainer.compile=none")
    if m.integrator == "dopri5" and m.adjoint:
        raise ConfigError(f"{several}: model.adjoint=true with model.integrator=dopri5 would control the adjoint's "
                          "error on each rank's own shard of the parameters' adjoint; use model.adjoint=false or "
                          "model.integrator=rk4")


def _validate_sweep(cfg) -> None:
    from .replicas import parse_replica, replica_dirname

    for key in cfg.sweep.vectorize:
        _choice("sweep.vectorize", key, C.VECTORIZABLE)
    names = [replica_dirname(r) for r in cfg.sweep.replicas]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"sweep.replicas: the values {', '.join(dup)} appear twice (each replica needs its own "
                          "run directory); list each value once")
    for r in cfg.sweep.replicas:
        for key, _ in parse_replica(r):
            _choice(f"sweep.replicas entry {r!r}: key", key, C.VECTORIZABLE)
    if cfg.sweep.vectorize or cfg.sweep.replicas:
        if cfg.model.integrator != "euler" or cfg.model.adjoint:
            raise ConfigError("sweep.vectorize needs model.integrator=euler and model.adjoint=false "
                              f"(got {cfg.model.integrator}, adjoint={cfg.model.adjoint})")
        if cfg.optim.batch_size is not None:
            raise ConfigError("sweep.vectorize needs full-batch training: set optim.batch_size=null")


def validate_against_data(cfg, d_in: int, d_out: int, n_train: int) -> None:
    """Checks that need the dataset's shape (known before any output is written)."""
    if cfg.model.d < max(d_in, d_out):
        raise ConfigError(f"model.d={cfg.model.d} is smaller than the data of data.name={cfg.data.name!r} "
                          f"(d_in={d_in}, d_out={d_out}); it must be >= {max(d_in, d_out)}")
    if cfg.callbacks.n_probe is not None and cfg.callbacks.n_probe > n_train and cfg.callbacks.kernel_every > 0:
        raise ConfigError(f"callbacks.n_probe={cfg.callbacks.n_probe} is larger than the training set "
                          f"({n_train} samples of data.name={cfg.data.name!r}); it must be <= {n_train}")
    groups = cfg.trainer.devices * cfg.trainer.num_nodes // cfg.trainer.particle_parallel
    if groups > n_train:
        raise ConfigError(f"trainer.devices x trainer.num_nodes / trainer.particle_parallel = {groups} data groups "
                          f"need at least as many training samples ({n_train}); it must be <= {n_train}")
    if cfg.optim.batch_size is not None and cfg.optim.batch_size > n_train:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} is larger than the training set ({n_train}); "
                          f"it must be <= {n_train}")
