"""Replicas: the values of shape-preserving keys run inside one job (`sweep.vectorize=[...]`).

`cotresnet-train -m model.M=16,64 seed=0,1,2,3 sweep.vectorize=[seed]` launches 2 jobs, each
stepping 4 replicas (seeds) together; every replica still gets a run directory of its own
(`<job dir>/seed=0/`, ...), with `.hydra/config.yaml`, `overrides.yaml` and the whole run contract.
Without `sweep.vectorize` the sweeper is Hydra's BasicSweeper. The plugin class lives in
hydra_plugins/cotresnet_sweeper (Hydra only loads plugins from that namespace).
"""
from __future__ import annotations

import itertools
from typing import List, Sequence


def _replica_strings(vectorized) -> List[str]:
    values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
              else [f"{o.get_key_element()}={o.get_value_element_as_str()}"] for o in vectorized]
    return [" ".join(combo) for combo in itertools.product(*values)]


def split_jobs(overrides, vectorize: Sequence[str], max_batch_size=None) -> List[List[List[str]]]:
    """BasicSweeper.split_arguments, with the overrides of `vectorize` keys folded into one
    `sweep.replicas=[...]` override per job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    vectorized = [o for o in overrides if o.get_key_element() in vectorize]
    rest = [o for o in overrides if o.get_key_element() not in vectorize]
    batches = BasicSweeper.split_arguments(rest, max_batch_size)
    if not vectorized:
        return batches
    quoted = ",".join(f"'{r}'" for r in _replica_strings(vectorized))
    return [[job + [f"sweep.replicas=[{quoted}]"] for job in batch] for batch in batches]
