"""cotresnet's sweeper for Hydra (plugins must live in the hydra_plugins namespace): BasicSweeper,
with the values of `sweep.vectorize` keys folded into replicas of one job (cotresnet/sweeps/vectorize.py)."""
from typing import Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from cotresnet.sweeps.expand import composed, reusing_compositions
from cotresnet.sweeps.vectorize import split_jobs


class VectorizingSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None) -> None:
        super().__init__(max_batch_size, params)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # the launcher is handed the configurations cotresnet's checks composed (sweeps.expand.ReusingLoader)
        super().setup(hydra_context=reusing_compositions(hydra_context), task_function=task_function, config=config)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        # the jobs cotresnet's checks composed (sweeps.checks.check_grid) are legal; Hydra composes the others
        super().validate_batch_is_legal([job for job in batch if not composed(self.config, job)])

    def split_arguments(self, overrides: List[Override], max_batch_size=None) -> List[List[List[str]]]:
        return split_jobs(overrides, list(self.config.sweep.vectorize), max_batch_size)
