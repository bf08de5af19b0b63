"""Composing the training configuration from conf/ as `cotresnet-train` does: Hydra's resolvers, compose_config
for notebooks, scripts and tests, Hydra's composition errors as one-line refusals, a composed configuration's
own part (without its `hydra` node). No torch."""
from __future__ import annotations

import math
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import refuse
from .keys import composition_error
from .schema import register

CONF_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")


def register_resolvers() -> None:
    register()
    if not OmegaConf.has_resolver("uid"):
        # six random hex digits: run directories stay unique when many jobs start in the same second
        OmegaConf.register_new_resolver("uid", lambda: uuid.uuid4().hex[:6], use_cache=True)
    if not OmegaConf.has_resolver("dirname"):
        # a job directory's name from its overrides: safe, bounded, rounded (rundir.contract.safe_dirname)
        from ..rundir.contract import safe_dirname

        OmegaConf.register_new_resolver("dirname", lambda text: safe_dirname(str(text)))
    if not OmegaConf.has_resolver("mul"):
        # products of config values, e.g. model.M: ${mul:2,${model.L},${model.L}} ties width to depth
        OmegaConf.register_new_resolver("mul", lambda *xs: math.prod(xs))


def compose_config(overrides=(), multirun: bool = False) -> DictConfig:
    """The composed training configuration of a list of overrides (as `cotresnet-train` composes it), outside a
    Hydra run: notebooks, scripts, tests. A value Hydra cannot compose, or one the checks refuse (those that need
    no data: config.validate), raises ConfigError naming the key; `multirun`: compose as a sweep does (sweep
    values such as model.M=8,16 are allowed and left to the sweep's checks)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from .validate import validate

    register_resolvers()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        try:
            if multirun:
                loader = GlobalHydra.instance().config_loader()
                return task_config(loader.load_configuration("train", list(overrides), RunMode.MULTIRUN))
            cfg = compose("train", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as e:
            raise composition_error(e) from e
    validate(cfg)
    return cfg


def refuse_composition_errors() -> None:
    """Hydra's composition errors become one-line refusals (exit 2) before any file, instead of Hydra's
    own report (exit 1): every composition Hydra makes (its mode probe, the run's, the sweep's) goes
    through this wrapper, so the configuration is composed by Hydra alone."""
    from hydra._internal.hydra import Hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    compose = Hydra.compose_config
    if getattr(compose, "refuses", False):
        return

    def composed_or_refused(self, *args, **kwargs):
        try:
            return compose(self, *args, **kwargs)
        except (HydraException, OmegaConfBaseException) as e:
            refuse(str(composition_error(e)))

    composed_or_refused.refuses = True
    Hydra.compose_config = composed_or_refused


def task_config(config: DictConfig) -> DictConfig:
    """The job's own configuration: Hydra's composed config without its `hydra` node."""
    return OmegaConf.masked_copy(config, [k for k in config.keys() if k != "hydra"]) if "hydra" in config else config
