"""Shared set-up: one intra-op thread per test process (and its children), the helpers module and scripts/ on
the path, Hydra's resolvers registered, and fixtures for small configurations and runs."""
import os
import sys
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # children (CLI subprocesses) inherit it
os.environ.setdefault("WANDB_SILENT", "true")
sys.path.insert(0, str(Path(__file__).parent))  # helpers
sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))  # slurm_local

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from cotresnet.config.compose import register_resolvers  # noqa: E402
from helpers import SMALL, train_small  # noqa: E402

register_resolvers()


@pytest.fixture
def small():
    """compose_config(SMALL + overrides): a 3-layer, 8-particle job on 24 teacher samples."""
    from cotresnet.config.compose import compose_config

    return lambda *overrides: compose_config([*SMALL, *overrides])


@pytest.fixture
def run_small(tmp_path):
    """Train a small job in-process into tmp_path/<name>; returns (summary, run_dir)."""
    return lambda *overrides, name="run": train_small(tmp_path / name, *overrides)
