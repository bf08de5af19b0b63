"""One combination's bracket in a threshold search (threshold.py's module doc, steps 1 to 3): the search's
settings, where a combination stands, the values its next round evaluates and how a round's verdicts move
its bracket (expand, bisect, stop). Pure functions of frozen states."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Tuple

RUNNING, CONVERGED, UNBRACKETED, INVERTED = "running", "converged", "unbracketed", "inverted"


@dataclass(frozen=True)
class SearchConfig:
    """One threshold search. `combinations` label the other swept keys' values (e.g.
    "data.n_train=64"); `brackets` overrides [lo, hi] per label. `replicas`: the seeds of a point
    run as one job (cotresnet's vectorized replicas), else one job per seed."""
    key: str
    lo: float
    hi: float
    combinations: Tuple[str, ...] = ("all",)
    brackets: Mapping[str, Tuple[float, float]] = field(default_factory=dict)
    integer: bool = False
    log: bool = True
    direction: str = "above"
    seeds: Tuple[int, ...] = (0,)
    fraction: float = 0.5
    ratio: float = 1.1
    width: float = 0.0
    factor: float = 4.0
    limits: Tuple[float, float] = (-math.inf, math.inf)
    max_expansions: int = 4
    replicas: bool = True

    def __post_init__(self):
        if self.direction not in ("above", "below"):
            raise ValueError(f"direction must be 'above' or 'below', not {self.direction!r}")
        if self.log and self.ratio <= 1 + 1e-6 or not (self.log or self.integer or self.width > 0):
            raise ValueError("need ratio > 1 (log space) or width > 0 (linear space)")
        if self.factor <= 1 or not 0 < self.fraction <= 1 or not self.seeds:
            raise ValueError("need factor > 1, 0 < fraction <= 1 and at least one seed")
        if len(set(self.combinations)) != len(self.combinations) or set(self.brackets) - set(self.combinations):
            raise ValueError("combinations must be unique and cover every key of brackets")
        for c in self.combinations:
            lo, hi = self.bracket(c)
            if not (self.lower_limit <= lo < hi <= self.limits[1]) or (self.log and lo <= 0):
                raise ValueError(f"bracket [{lo}, {hi}] of {c!r} is empty, outside limits or not > 0 in log space")

    @property
    def lower_limit(self) -> float:
        # log space needs positive values; integer ones start at 1
        return max(self.limits[0], 1) if self.integer and self.log else self.limits[0]

    def bracket(self, combination: str) -> Tuple[float, float]:
        lo, hi = self.brackets.get(combination, (self.lo, self.hi))
        return self.norm(lo), self.norm(hi)

    def norm(self, value) -> float:
        """The canonical form of a value, so values read back from disk match the ones asked for:
        ints for integer keys, floats cut to 10 significant digits (also short overrides)."""
        return int(round(float(value))) if self.integer else float(f"{float(value):.10g}")


@dataclass(frozen=True)
class CombinationState:
    """Where one combination's search stands. lo_above / hi_above: whether that end lies above
    the threshold (None while unevaluated); rounds: rounds whose outcomes were applied."""
    combination: str
    lo: float
    hi: float
    lo_above: bool | None = None
    hi_above: bool | None = None
    status: str = RUNNING
    rounds: int = 0
    expansions: int = 0


@dataclass(frozen=True)
class PointRequest:
    """A point to evaluate: one job (replicas) or one job per seed of `seeds`."""
    combination: str
    value: float
    seeds: Tuple[int, ...]
    round: int


def pending_values(cfg: SearchConfig, st: CombinationState) -> List[float]:
    """The values this state's next round evaluates."""
    if st.status != RUNNING:
        return []
    ends = [v for v, above in ((st.lo, st.lo_above), (st.hi, st.hi_above)) if above is None]
    return ends or [_midpoint(cfg, st.lo, st.hi)]


def _midpoint(cfg: SearchConfig, lo: float, hi: float) -> float:
    m = math.sqrt(lo * hi) if cfg.log else (lo + hi) / 2
    if cfg.integer:
        m = min(max(math.floor(m + 0.5), lo + 1), hi - 1)
    return cfg.norm(m)


def apply_round(cfg: SearchConfig, st: CombinationState, above: Dict[float, bool]) -> CombinationState:
    """Apply one round's verdicts (value -> lies above the threshold)."""
    st = replace(st, rounds=st.rounds + 1)
    if st.lo_above is None or st.hi_above is None:
        st = replace(st, lo_above=above.get(st.lo, st.lo_above), hi_above=above.get(st.hi, st.hi_above))
    else:
        ((mid, mid_above),) = above.items()
        st = replace(st, hi=mid, hi_above=True) if mid_above else replace(st, lo=mid, lo_above=False)
    if st.lo_above and not st.hi_above:
        return replace(st, status=INVERTED)
    if st.lo_above == st.hi_above:
        return _expand(cfg, st)
    return replace(st, status=CONVERGED) if _narrow(cfg, st.lo, st.hi) else st


def _narrow(cfg: SearchConfig, lo: float, hi: float) -> bool:
    """The stop rule of a bracket whose ends lie on either side."""
    return (cfg.integer and hi - lo <= 1) or (hi / lo <= cfg.ratio if cfg.log else hi - lo <= cfg.width)


def bisections_left(cfg: SearchConfig, lo: float, hi: float) -> int:
    """Midpoints a bracket still needs before the stop rule, the larger half kept at every round (an upper
    bound where rounding to integers makes the halves unequal)."""
    n = 0
    while not _narrow(cfg, lo, hi):
        m = _midpoint(cfg, lo, hi)
        larger_above = (hi / m > m / lo) if cfg.log else (hi - m > m - lo)
        lo, hi, n = (m, hi, n + 1) if larger_above else (lo, m, n + 1)
    return n


def _expand(cfg: SearchConfig, st: CombinationState) -> CombinationState:
    """Both ends on one side: move the far end past the near one (module doc, step 2)."""
    down = st.lo_above  # both above: the threshold lies below lo
    near = st.lo if down else st.hi
    if cfg.log:
        far = st.lo / cfg.factor if down else st.hi * cfg.factor
    else:
        far = st.lo - cfg.factor * (st.hi - st.lo) if down else st.hi + cfg.factor * (st.hi - st.lo)
    if cfg.integer:
        far = math.floor(far) if down else math.ceil(far)
    far = cfg.norm(min(max(far, cfg.lower_limit), cfg.limits[1]))
    if far == near or st.expansions >= cfg.max_expansions:
        return replace(st, status=UNBRACKETED)
    if down:
        return replace(st, lo=far, hi=near, lo_above=None, hi_above=True, expansions=st.expansions + 1)
    return replace(st, lo=near, hi=far, lo_above=False, hi_above=None, expansions=st.expansions + 1)
