"""The threshold-search sweeper's settings, typed (as Hydra's Optuna plugin keeps its config apart from its
plugin class): ThresholdSweeperConf is registered in Hydra's ConfigStore as hydra/sweeper/threshold_schema
(conf/hydra/sweeper/threshold.yaml extends it). An experiment sets the sweeper by value instead (train.yaml's
own sweeper override wins over any override in an experiment), so the search merges whatever it was given
over this schema again before it starts (threshold_search.typed_settings).

No `from __future__ import annotations`: Hydra's plugin scanner imports the plugin module, which imports
this one, before it is in sys.modules, where dataclasses cannot resolve string annotations.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class CriterionConf:
    """A seed succeeds when its run finished (converged or max_steps; diverged and failed runs fail)
    and `metric op value` holds at its end, i.e. within the job's flow time max_steps x dt."""

    metric: str = "risk_ratio"  # final risk_train / risk_init, or a final metric / summary number (risk_test, ...)
    op: str = "<="  # <= or >=
    value: float = 1.0e-3


@dataclass
class ThresholdSweeperConf:
    _target_: str = "hydra_plugins.cotresnet_sweeper.threshold.ThresholdSweeper"
    key: str = "model.M"  # the searched key: an int key is searched over integers, a float key over reals
    lo: float = 4.0  # the initial bracket [lo, hi]
    hi: float = 512.0
    log: bool = True  # bisect log(value) (geometric midpoints); false: the value itself
    direction: str = "above"  # above: large values succeed (width); below: small values do (init scale)
    ratio: float = 1.1  # log space: stop when hi / lo <= ratio (integers also when hi - lo <= 1)
    width: float = 0.0  # linear space: stop when hi - lo <= width
    factor: float = 4.0  # both ends on one side: the far end moves by this factor (log) or bracket widths (linear)
    min_value: Optional[float] = None  # limits for the expanded bracket (integers in log space: >= 1)
    max_value: Optional[float] = None
    max_expansions: int = 4  # expansions before a combination stops as unbracketed
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    fraction: float = 0.5  # a point succeeds when at least this fraction of its seeds does
    replicas: bool = True  # the seeds of a point run as one job (sweep.replicas); false: one job per seed
    criterion: CriterionConf = field(default_factory=CriterionConf)
    level: float = 0.95  # confidence level of the threshold and scaling-exponent intervals
    params: Optional[Dict[str, str]] = None  # other swept keys (as BasicSweeper's params), e.g. data.n_train: 16,32

def register() -> None:
    ConfigStore.instance().store(group="hydra/sweeper", name="threshold_schema", node=ThresholdSweeperConf,
                                 provider="cotresnet")
