"""cotresnet's threshold-search sweeper for Hydra (`hydra/sweeper=threshold`): per combination of the
other swept keys, it brackets and bisects one key until the bracket is within a ratio, judging each
point over several seeds. The search is cotresnet.sweeps.threshold_search, its settings
cotresnet.sweeps.threshold_settings; this class launches it (the sweep's report is drawn when it ends). This
module imports no torch: Hydra imports every module of the hydra_plugins namespace when it scans for
plugins.
"""
from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from cotresnet.sweeps.threshold_settings import register

register()


class ThresholdSweeper(Sweeper):
    """Rounds of jobs through the configured launcher, one launch per round (see the module doc).
    `settings` are ThresholdSweeperConf's fields; they are checked when the sweep starts."""

    def __init__(self, **settings: Any) -> None:
        self.settings = {k: OmegaConf.to_container(v) if isinstance(v, DictConfig) else v for k, v in settings.items()}
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        from cotresnet.sweeps.expand import reusing_compositions

        # each round's launch is handed the configurations its checks composed (sweeps.expand.ReusingLoader)
        hydra_context = reusing_compositions(hydra_context)
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: List[str]) -> Any:
        from pathlib import Path

        from cotresnet.sweeps.threshold_search import run_search

        returns = run_search(self, list(arguments))
        print(f"  tables: {Path(str(self.config.hydra.sweep.dir))}/threshold_*.csv", flush=True)
        return returns
