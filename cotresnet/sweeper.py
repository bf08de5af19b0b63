"""A Hydra sweeper that runs the values of shape-preserving keys as replicas inside one job.

`cotresnet-train -m model.M=16,64 seed=0,1,2,3 sweep.vectorize=[seed]` launches 2 jobs, each
stepping 4 replicas (seeds) together; every replica still gets a run directory of its own
(`<job dir>/seed=0/`, ...), with `.hydra/config.yaml`, `overrides.yaml` and the whole run contract.
Without `sweep.vectorize` it is Hydra's BasicSweeper. The plugin class lives in
hydra_plugins/cotresnet_sweeper (Hydra only loads plugins from that namespace).
"""
from __future__ import annotations

import copy
import itertools
from typing import List, Sequence

import yaml
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf, open_dict


def _replica_strings(vectorized: Sequence[Override]) -> List[str]:
    values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
              else [f"{o.get_key_element()}={o.get_value_element_as_str()}"] for o in vectorized]
    return [" ".join(combo) for combo in itertools.product(*values)]


def split_jobs(overrides: List[Override], vectorize: Sequence[str], max_batch_size=None) -> List[List[List[str]]]:
    """BasicSweeper.split_arguments, with the overrides of `vectorize` keys folded into one
    `sweep.replicas=[...]` override per job."""
    vectorized = [o for o in overrides if o.get_key_element() in vectorize]
    rest = [o for o in overrides if o.get_key_element() not in vectorize]
    batches = BasicSweeper.split_arguments(rest, max_batch_size)
    if not vectorized:
        return batches
    quoted = ",".join(f"'{r}'" for r in _replica_strings(vectorized))
    return [[job + [f"sweep.replicas=[{quoted}]"] for job in batch] for batch in batches]


def replica_dirname(replica: str) -> str:
    return ",".join(replica.split())


def replica_config(cfg, replica: str):
    """The job config with one replica's values (`key=value key=value`) applied; sweep.replicas cleared."""
    out = copy.deepcopy(cfg)
    with open_dict(out):
        for item in replica.split():
            key, _, value = item.partition("=")
            OmegaConf.update(out, key, yaml.safe_load(value), merge=False)
        out.sweep.replicas = []
    return out
