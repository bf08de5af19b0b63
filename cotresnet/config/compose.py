"""Composing the training configuration from conf/ as `cotresnet-train` does: Hydra's resolvers, compose_config
for notebooks, scripts and tests, Hydra's composition errors as one-line refusals, a composed configuration's
own part (without its `hydra` node). No torch."""
from __future__ import annotations

import math
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError, refuse
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

    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"compose_config takes a list of overrides, e.g. ['model.L=8'], not {overrides!r}")
    register_resolvers()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        try:
            if multirun:
                loader = GlobalHydra.instance().config_loader()
                return task_config(loader.load_configuration("train", list(overrides), RunMode.MULTIRUN))
            cfg = compose("train", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as e:
            raise composition_error(e) from e
    experiment_conflicts(overrides)
    validate(cfg)
    return cfg


def experiment_conflicts(overrides) -> None:
    """An experiment is merged after the config groups, so its values replace those of a group option chosen on
    the command line (experiment=pl_phase_diagram callbacks=none would compute kernels every 200 steps):
    refused where it replaces a value that makes the option what it is (one it sets otherwise than the group's
    default option), naming each value and the override that keeps the option's. Values given on the command
    line win over both, so they are never in conflict."""
    import yaml

    chosen = dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith(("+", "~")))
    experiment = chosen.get("experiment")
    path = Path(CONF_DIR) / "experiment" / f"{experiment}.yaml"
    if not experiment or not path.is_file():
        return
    def option_values(group: str, option) -> dict:
        file = Path(CONF_DIR) / group / f"{option}.yaml"
        return (yaml.safe_load(file.read_text()) or {}) if isinstance(option, str) and file.is_file() else {}

    defaults = {k: v for d in yaml.safe_load((Path(CONF_DIR) / "train.yaml").read_text())["defaults"]
                if isinstance(d, dict) for k, v in d.items()}
    body, clashes = yaml.safe_load(path.read_text()) or {}, []
    for group, option in chosen.items():
        if "/" in group or not isinstance(body.get(group), dict):
            continue
        # the values that make the option what it is: those it sets otherwise than the group's default option
        values, usual = option_values(group, option), option_values(group, defaults.get(group))
        clashes += [(f"{group}.{k}", v, values[k], group, option) for k, v in body[group].items()
                    if k in values and values[k] != v and values[k] != usual.get(k) and f"{group}.{k}" not in chosen]
    if clashes:
        sets = ", ".join(f"{key}={new}" for key, new, _, _, _ in clashes)
        keep = " ".join(f"{key}={old}" for key, _, old, _, _ in clashes)
        options = ", ".join(dict.fromkeys(f"{g}={o}" for *_, g, o in clashes))
        raise ConfigError(f"experiment={experiment} sets {sets}, replacing the values of {options} (an experiment is "
                          f"merged after the groups); to keep them give {keep}")


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
