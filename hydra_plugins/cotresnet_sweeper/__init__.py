"""cotresnet's sweeper for Hydra (plugins must live in the hydra_plugins namespace): BasicSweeper,
with the values of `sweep.vectorize` keys folded into replicas of one job (cotresnet/sweeps/vectorize.py)."""
from typing import Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override

from cotresnet.sweeps.vectorize import split_jobs


class VectorizingSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__(max_batch_size, params)

    def split_arguments(self, overrides: List[Override], max_batch_size=None) -> List[List[List[str]]]:
        return split_jobs(overrides, list(self.config.sweep.vectorize), max_batch_size)
