"""Sweeps beyond a grid: replicas of a vectorized job, the jobs of a multirun, the threshold search. No torch
at import (the Hydra plugins import it)."""
