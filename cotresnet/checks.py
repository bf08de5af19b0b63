"""Every check that runs before a job writes anything: ranges and choices, keys outside the schema,
replicas, the data, the device, the run directory's owner and any checkpoint to resume from.
A refusal is a ConfigError whose message names the field and what is allowed."""
from __future__ import annotations

import difflib
import math
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import List, Optional

from omegaconf import OmegaConf

from . import config as C
from .config import ConfigError

# lightning.Trainer arguments the job sets itself: trainer.extra may not change them
OWNED_TRAINER_ARGS = ("max_steps", "max_epochs", "accelerator", "devices", "logger", "callbacks", "enable_progress_bar",
                      "enable_model_summary", "enable_checkpointing", "num_sanity_val_steps", "limit_val_batches",
                      "log_every_n_steps", "precision", "default_root_dir", "plugins")


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


def unknown_keys(cfg, schema=C.TrainConfig, prefix: str = "") -> None:
    """Keys the schema does not know (Hydra's `+key=value` adds them past its struct check)."""
    hints = typing.get_type_hints(schema)
    for key in cfg.keys():
        path = f"{prefix}{key}"
        if key == "hydra" and not prefix:
            continue
        if key not in hints:
            near = difflib.get_close_matches(str(key), list(hints), n=1)
            raise ConfigError(f"{path} is not a configuration key{f'; did you mean {prefix}{near[0]}' if near else ''} "
                              f"(keys here: {', '.join(hints)})")
        sub = _dataclass_of(hints[key])
        if sub is not None and OmegaConf.is_dict(cfg[key]):
            unknown_keys(cfg[key], sub, f"{path}.")


def _dataclass_of(tp):
    for t in (tp, *typing.get_args(tp)):
        if is_dataclass(t):
            return t
    return None


def validate(cfg) -> None:
    """Check every value a type cannot check. Raises ConfigError naming the field."""
    unknown_keys(cfg)
    _validate_model(cfg.model)
    i, d, o, t, c = cfg.init, cfg.data, cfg.optim, cfg.trainer, cfg.callbacks
    _choice("init.scheme", i.scheme, C.INIT_SCHEMES)
    for key in ("scale_u", "scale_w", "scale_b"):
        _finite(f"init.{key}", getattr(i, key), positive=False)
    _validate_data(d)
    _finite("optim.dt", o.dt, positive=True)
    _choice("optim.parameterization", o.parameterization, C.PARAMETERIZATIONS)
    if o.batch_size is not None:
        _at_least("optim.batch_size", o.batch_size, 1)
    _validate_trainer(t)
    if cfg.logger.wandb is not None:
        _choice("logger.wandb.mode", cfg.logger.wandb.mode, ("offline", "online", "disabled"))
    for key in ("kernel_every", "ot_every"):
        _at_least(f"callbacks.{key}", getattr(c, key), 0)
    if c.n_probe is not None:
        _at_least("callbacks.n_probe", c.n_probe, 1)
    _at_least("callbacks.kernel_max_dim", c.kernel_max_dim, 1)
    _at_least("checkpoint_every", cfg.checkpoint_every, 0)
    _at_least("seed", cfg.seed, 0, C.SEED_MAX)
    if cfg.optimized_metric is not None:
        from .rundir import COLUMNS, SUMMARY_METRICS

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
    if m.adjoint and m.integrator == "euler":
        raise ConfigError("model.adjoint=true needs an ODE integrator: set model.integrator to rk4 or dopri5 "
                          "(with euler the network is the ResNet itself and backprop is exact)")
    if m.backprop == "recompute" and m.integrator != "euler":
        raise ConfigError(f"model.backprop=recompute applies to model.integrator=euler (got {m.integrator}); for ODE "
                          "integrators set model.adjoint=true, whose memory does not grow with depth")
    _choice("model.embedding", m.embedding, C.EMBEDDINGS)
    _choice("model.readout", m.readout, C.READOUTS)
    _choice("model.dtype", m.dtype, C.DTYPES)


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


def _validate_trainer(t) -> None:
    _at_least("trainer.max_steps", t.max_steps, 1)
    _choice("trainer.accelerator", t.accelerator, C.ACCELERATORS)
    _at_least("trainer.log_every", t.log_every, 1)
    _finite("trainer.converge_ratio", t.converge_ratio, positive=False)
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


def _validate_sweep(cfg) -> None:
    from .sweeper import parse_replica, replica_dirname

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
    if cfg.optim.batch_size is not None and cfg.optim.batch_size > n_train:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} is larger than the training set ({n_train}); "
                          f"it must be <= {n_train}")


def kernel_samples(cfg, n_train: int, d_out: int) -> int:
    """How many training samples the kernels use: callbacks.n_probe, or the whole training set while the
    tangent kernel (n d_out square) stays within callbacks.kernel_max_dim."""
    if cfg.callbacks.n_probe is not None:
        return min(cfg.callbacks.n_probe, n_train)
    return max(1, min(n_train, cfg.callbacks.kernel_max_dim // d_out))


def check_device(cfg) -> None:
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible "
                              "(torch.cuda.is_available() is False); use trainer=cpu")


def check_config(cfg):
    """Every check of one configuration that needs no run directory; returns its (float64) dataset."""
    import torch

    from .data import load_dataset

    validate(cfg)
    dataset = load_dataset(cfg.data, getattr(torch, cfg.model.dtype))
    validate_against_data(cfg, dataset.d_in, dataset.d_out, dataset.n_train)
    check_device(cfg)
    return dataset


@dataclass
class Member:
    """One trained network of a job: its configuration, dataset, run directory and identity."""

    cfg: object
    dataset: object
    run_dir: Path
    identity: dict
    replica: Optional[str] = None


@dataclass
class JobCheck:
    """A checked job: its members (one, or the replicas of a vectorized job), identity and plan."""

    cfg: object
    run_dir: Path
    members: List[Member]
    identity: dict
    plan: object
    checkpoint_info: Optional[dict] = None  # the checkpoint's 'cotresnet' entry (step, RNG states, wandb ids)


def check_job(cfg, run_dir: Path) -> JobCheck:
    """Every check of a job in `run_dir`, reading but never writing: config, data, device, the
    directory's owner (ownership.plan) and the checkpoint it would resume from."""
    from . import ownership as O
    from .sweeper import replica_config, replica_dirname

    run_dir = Path(run_dir).absolute()
    validate(cfg)
    members = []
    for replica in cfg.sweep.replicas or [None]:
        rc = replica_config(cfg, replica) if replica else cfg
        ds = check_config(rc)
        rd = run_dir / replica_dirname(replica) if replica else run_dir
        members.append(Member(rc, ds, rd, O.identity(rc, O.data_digest(ds.tensors())), replica))
    ident = O.job_identity([m.identity for m in members]) if cfg.sweep.replicas else members[0].identity
    check = JobCheck(cfg, run_dir, members, ident, None)
    return replan(check)


def replan(check: JobCheck) -> JobCheck:
    """(Re)decide what the job does in its directory, e.g. once it holds the lock (another job may have
    written there since the first check); inspects the checkpoint the plan resumes from."""
    from . import ownership as O

    check.plan = O.plan(check.cfg, check.run_dir, check.identity, [m.run_dir for m in check.members])
    check.checkpoint_info = None
    if check.plan.checkpoint is not None:
        check.checkpoint_info = inspect_checkpoint(check.plan.checkpoint, check.cfg, check.identity)["cotresnet"]
    return check


def inspect_checkpoint(path: Path, cfg, ident: dict) -> dict:
    """Load a checkpoint safely (weights_only) and check it belongs to this configuration's trajectory."""
    from .atomic import load_trusted

    where = f"resume={str(path)!r}" if cfg.resume not in ("auto", "never") else f"checkpoint {path}"
    if not Path(path).is_file():
        raise ConfigError(f"{where} is not a readable file; use never, auto or a checkpoint path")
    try:
        ckpt = load_trusted(path)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("cotresnet"), dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{where} is not a cotresnet checkpoint (no 'cotresnet' / 'state_dict' entry)")
    info = ckpt["cotresnet"]
    if info.get("fingerprint") != ident["fingerprint"]:
        from .ownership import differences

        diff = "; ".join(differences(info.get("identity") or {}, ident)) or "no identity recorded"
        raise ConfigError(f"{where} belongs to another configuration ({diff}); resume needs the same model, init, "
                          "data, optim and seed")
    if info.get("global_step", 0) > cfg.trainer.max_steps:
        raise ConfigError(f"trainer.max_steps={cfg.trainer.max_steps} is below the step {info['global_step']} "
                          f"{where} was written at; raise it, or set resume=never to start again")
    return ckpt
