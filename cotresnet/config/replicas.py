"""The replica format of a vectorized job: `sweep.replicas` holds one 'key=value key=value' string per replica,
each with its own run directory (`<job dir>/<key=value,key=value>/`) and its own configuration."""
from __future__ import annotations

import copy
from typing import List, Tuple

import yaml
from omegaconf import OmegaConf, open_dict

from ..errors import ConfigError


def parse_replica(replica: str) -> List[Tuple[str, object]]:
    """'seed=0 init.scale_u=0.5' -> [("seed", 0), ("init.scale_u", 0.5)]."""
    out = []
    for item in replica.split():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"sweep.replicas entry {replica!r}: {item!r} is not key=value")
        out.append((key, yaml.safe_load(value)))
    return out


def replica_dirname(replica: str) -> str:
    """A replica's directory in its job's: its overrides, made a safe, bounded name."""
    from ..rundir.contract import safe_dirname

    return safe_dirname(",".join(replica.split()))


def replica_config(cfg, replica: str):
    """The job config with one replica's values (`key=value key=value`) applied; sweep.replicas cleared."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for key, value in parse_replica(replica):
            OmegaConf.update(out, key, value, merge=False)
        out.sweep.replicas = []
    return out
