"""Threshold search: the value of one config key (e.g. model.M) where training starts to succeed,
per combination of the other swept keys, found by bracketing and bisection, round by round.

A point (combination, value) runs over the configured seeds; it is a success if the fraction of
successful seeds is >= `fraction`. Write u = log(value) (or value itself when `log` is False).
With direction "above" the success side is the upper one (M large enough converges); with
"below" it is the lower one (an init scale small enough). Per combination:

1. Evaluate both ends of the initial bracket [lo, hi].
2. Both ends on one side: expand towards the threshold, keeping the near end: the new far end is
   lo / factor or hi * factor (log space), lo - factor (hi - lo) or hi + factor (hi - lo)
   (linear space); integers round outward (floor / ceil) and everything is clipped to `limits`
   (integers in log space to >= 1). If the far end cannot move (it sits on a limit) or
   `max_expansions` expansions are spent, the combination stops as "unbracketed": both ends of
   its reported bracket lie on the same side, the threshold beyond the end at the limit.
3. Ends on opposite sides: bisect at the midpoint in u (geometric midpoint in log space);
   integers round it to the nearest integer (halves up) strictly inside (lo, hi). The midpoint
   replaces the end on its own side. Stop ("converged") when hi / lo <= ratio (log space),
   hi - lo <= width (linear space), or, for integers, hi - lo <= 1.

Noise: the search trusts each point's verdict. Bisection keeps "lo on the lower side, hi on the upper, no
evaluated point inside (lo, hi)", so a wrong verdict moves the bracket to a false crossing, but the search
still ends and never evaluates a value twice; the logistic fit (threshold_stats) weighs every seed. Initial
ends on the wrong sides (most often a wrong `direction`) stop the combination as "inverted".

Resume: the state is a pure function of the stored outcomes: each query replays the search from the initial
brackets up to the first round with a missing (value, seed), so a table loaded from disk resumes exactly
where the search stopped, and next_points() asks only for what is missing.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import numpy as np
import pandas as pd

from .threshold_bracket import (
    RUNNING,
    CombinationState,
    PointRequest,
    SearchConfig,
    apply_round,
    bisections_left,
    pending_values,
)
from .threshold_stats import fraction_threshold

OUTCOME_COLUMNS = ["combination", "value", "seed", "success"]


class ThresholdSearch:
    """Drive with `while not s.done: ask s.next_points(), run them, s.record(outcomes)`.
    Outcome tables have one row per (combination, value, seed) with a bool `success`."""

    def __init__(self, config: SearchConfig):
        self.config = config
        self._outcomes: Dict[Tuple[str, float], Dict[int, bool]] = {}

    def load(self, table) -> None:
        """Replace the stored outcomes by `table` (e.g. outcomes() saved to disk); later rows of
        a repeated (combination, value, seed) win."""
        self._outcomes = {}
        self._add(self._rows(table))

    def record(self, results) -> None:
        """Add a round's outcomes; each row must answer a request of next_points()."""
        rows = self._rows(results)
        asked = {(r.combination, r.value, s) for r in self.next_points() for s in r.seeds}
        unasked = [row[:3] for row in rows if row[:3] not in asked]
        if unasked:
            raise ValueError(f"outcomes not asked for by next_points(): {unasked[:5]}")
        self._add(rows)

    def next_points(self) -> List[PointRequest]:
        """Every point of every unfinished combination's current round, with its missing seeds."""
        requests = []
        for c in self.config.combinations:
            st, _ = self._replay(c)
            for v in pending_values(self.config, st):
                missing = tuple(s for s in self.config.seeds if s not in self._outcomes.get((c, v), {}))
                if missing:
                    requests.append(PointRequest(c, v, missing, st.rounds + 1))
        return requests

    def planned_points(self) -> int:
        """Points evaluated so far plus those the unfinished combinations still need if their brackets hold:
        the ends not yet evaluated, then one midpoint a round until the stop rule (an expansion adds more)."""
        left = sum(sum(end is None for end in (st.lo_above, st.hi_above)) + bisections_left(self.config, st.lo, st.hi)
                   for st in self.states() if st.status == RUNNING)
        pending = {(r.combination, r.value) for r in self.next_points()}
        return len(set(self._outcomes) - pending) + left

    @property
    def done(self) -> bool:
        return all(st.status != RUNNING for st in self.states())

    def states(self) -> List[CombinationState]:
        return [self._replay(c)[0] for c in self.config.combinations]

    def brackets(self) -> pd.DataFrame:
        """Per combination: combination, lo, hi, ratio (hi / lo; NaN in linear space), width
        (hi - lo), status (running/converged/unbracketed/inverted), rounds, expansions, points
        (evaluated values) and jobs."""
        pts = self.points()
        rows = []
        for st in self.states():
            mine = pts[pts.combination == st.combination]
            jobs = len(mine) if self.config.replicas else int(mine.seeds.sum())
            rows.append(dict(combination=st.combination, lo=st.lo, hi=st.hi,
                             ratio=st.hi / st.lo if self.config.log else math.nan, width=st.hi - st.lo,
                             status=st.status, rounds=st.rounds, expansions=st.expansions,
                             points=len(mine), jobs=jobs))
        return pd.DataFrame(rows)

    def points(self) -> pd.DataFrame:
        """Per evaluated point: combination, value, seeds (evaluated), successes, fraction,
        success (fraction >= config.fraction) and round (NaN for points the replay never asks
        for, e.g. loaded from an earlier configuration)."""
        rounds = {c: self._replay(c)[1] for c in self.config.combinations}
        rows = [dict(combination=c, value=v, seeds=len(o), successes=sum(o.values()),
                     fraction=sum(o.values()) / len(o), round=rounds[c].get(v, math.nan))
                for (c, v), o in self._outcomes.items()]
        df = pd.DataFrame(rows, columns=["combination", "value", "seeds", "successes", "fraction", "round"])
        df.insert(5, "success", df.fraction >= self.config.fraction)
        return df.sort_values(["combination", "value"], ignore_index=True)

    def outcomes(self) -> pd.DataFrame:
        """The stored outcomes, one row per seed: what load() takes to resume."""
        rows = [(c, v, s, ok) for (c, v), o in self._outcomes.items() for s, ok in sorted(o.items())]
        return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)

    def estimates(self, level: float = 0.95) -> pd.DataFrame:
        """threshold_stats.fraction_threshold of each combination with outcomes (where its success fraction
        crosses config.fraction, the quantity the search brackets): combination, threshold, lo, hi, slope,
        separable, level, plateau_low, plateau_high, never, always, note."""
        cfg = self.config
        return pd.DataFrame([dict(combination=c, **fraction_threshold(g.seed, g.value, g.success, cfg.fraction,
                                                                      direction=cfg.direction, log=cfg.log, level=level))
                             for c, g in self.outcomes().groupby("combination", sort=False)])

    def versus_grid(self) -> pd.DataFrame:
        """Jobs used against a grid over each initial bracket at the configured resolution (the
        spacing at which a bracket counts as final: ratio in log space, width in linear space,
        every integer at most): combination, jobs, grid_jobs, fraction. Seeds multiply both
        counts unless they run as replicas of one job."""
        cfg = self.config
        per_point = 1 if cfg.replicas else len(cfg.seeds)
        rows = []
        for _, b in self.brackets().iterrows():
            lo, hi = cfg.bracket(b.combination)
            steps = math.log(hi / lo) / math.log(cfg.ratio) if cfg.log else (hi - lo) / cfg.width
            n = math.ceil(steps - 1e-9) + 1
            grid = per_point * (min(n, hi - lo + 1) if cfg.integer else n)
            rows.append(dict(combination=b.combination, jobs=b.jobs, grid_jobs=grid, fraction=b.jobs / grid))
        return pd.DataFrame(rows)

    def _replay(self, c: str) -> Tuple[CombinationState, Dict[float, int]]:
        """The search of combination c re-run on the stored outcomes (module doc, Resume), and the
        round in which each of its points is asked for."""
        cfg = self.config
        st, rounds = CombinationState(c, *cfg.bracket(c)), {}
        while True:
            want = pending_values(cfg, st)
            rounds.update({v: st.rounds + 1 for v in want})
            got = [self._outcomes.get((c, v), {}) for v in want]
            if not want or any(set(cfg.seeds) - set(o) for o in got):
                return st, rounds
            fractions = [np.mean([o[s] for s in cfg.seeds]) for o in got]
            above = {v: (f >= cfg.fraction) == (cfg.direction == "above") for v, f in zip(want, fractions)}
            st = apply_round(cfg, st, above)

    def _rows(self, table) -> List[Tuple[str, float, int, bool]]:
        df = pd.DataFrame(table)
        if df.empty:
            return []
        if set(OUTCOME_COLUMNS) - set(df.columns) or df[OUTCOME_COLUMNS].isna().any().any():
            raise ValueError(f"outcomes need columns {OUTCOME_COLUMNS} without missing values")
        if not df.success.isin([True, False]).all():  # bool("False") would be True
            raise ValueError("success must be bool (or 0/1)")
        unknown = set(df.combination.astype(str)) - set(self.config.combinations)
        if unknown:
            raise ValueError(f"unknown combinations {sorted(unknown)}")
        return [(str(c), self.config.norm(v), int(s), bool(ok))
                for c, v, s, ok in df[OUTCOME_COLUMNS].itertuples(index=False)]

    def _add(self, rows) -> None:
        for c, v, s, ok in rows:
            self._outcomes.setdefault((c, v), {})[s] = ok
