"""Helpers shared by the test modules (import from here, never from another test module)."""
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # the repository
TRAIN = [sys.executable, "-m", "cotresnet.train"]
SMALL = ["model.L=3", "model.M=8", "data.n_train=24", "data.n_test=8"]
# a short run with every diagnostic: rows every 2 steps, kernels and distances every 6
SHORT = ["trainer.max_steps=12", "trainer.log_every=2", "callbacks.kernel_every=6", "callbacks.ot_every=6",
         "trainer.converge_ratio=0"]


def job_env(extra=None):
    """The environment of a training subprocess: one thread, quiet wandb, and no WANDB_SERVICE (an
    in-process wandb run of an earlier test exports it; a child would share, and outlive into, its service)."""
    env = {**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **(extra or {})}
    env.pop("WANDB_SERVICE", None)
    return env


def cli(args, cwd, env=None, timeout=300):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=job_env(env))


def train_small(run_dir: Path, *overrides, action=None):
    """Check and run a small job in-process in run_dir, as the task function does (locks, plan, fit);
    returns (summary, run_dir). Overrides come after SMALL. `action`: the plan's expected action."""
    return train(run_dir, *SMALL, *overrides, action=action)


def train(run_dir: Path, *overrides, action=None):
    """train_small without SMALL: the configuration is the default one plus `overrides`. The run draws no
    plots unless an override asks for them (they cost more than a small run)."""
    from cotresnet.config.compose import compose_config
    from cotresnet.job.checks import check_job
    from cotresnet.job.execute import execute
    from cotresnet.job.fit import JobContext
    from cotresnet.train import draw_run_figures

    if not any(o.startswith("plots=") for o in overrides):
        overrides = ("plots=[]", *overrides)
    cfg = compose_config(list(overrides))
    done, summaries = execute(check_job(cfg, run_dir), JobContext(list(overrides), name=Path(run_dir).name))
    draw_run_figures(cfg, summaries, missing_only=done == "done")
    assert action is None or done == action, (done, action)
    return (summaries if cfg.sweep.replicas else summaries[0]), Path(run_dir)


def make_net(L=5, M=7, d=4, d_in=3, d_out=2, act="tanh", seed=0, scale_u=1.5, **spec):
    """A float64 network with random particles (scales 1.5, 1, 0.5), built through its NetworkSpec."""
    from cotresnet.model.layered import MeanFieldResNet
    from cotresnet.model.particles import embedding_matrix, init_particles, readout_matrix
    from cotresnet.model.spec import NetworkSpec

    p = init_particles(L, M, d, scale_u=scale_u, scale_b=0.5, seed=seed, dtype=torch.float64)
    s = NetworkSpec(L=L, M=M, d=d, d_in=d_in, d_out=d_out, activation=act, dtype="float64", **spec)
    return MeanFieldResNet(p, s, embedding_matrix("pad", d, d_in, seed, torch.float64),
                           readout_matrix("first", d, d_out, seed, torch.float64))


def data(N=11, d_in=3, d_out=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, d_in, generator=g, dtype=torch.float64),
            torch.randn(N, d_out, generator=g, dtype=torch.float64))


def read_particles(run_dir: Path):
    return torch.load(Path(run_dir) / "particles.pt", weights_only=True)


def grid_experiments():
    """The named experiments run by our grid sweepers (a searching sweeper chooses its jobs as it goes)."""
    import yaml

    from cotresnet.config.compose import CONF_DIR
    from cotresnet.train import OUR_SWEEPERS

    names = []
    for path in sorted((Path(CONF_DIR) / "experiment").glob("*.yaml")):
        target = ((yaml.safe_load(path.read_text()).get("hydra") or {}).get("sweeper") or {}).get("_target_")
        if target is None or target in OUR_SWEEPERS:
            names.append(path.stem)
    return names


def threshold_tables(out):
    """(threshold_points.csv, threshold_outcomes.csv) of a threshold search's sweep directory."""
    import pandas as pd

    return (pd.read_csv(out / "threshold_points.csv", dtype={"combination": str}),
            pd.read_csv(out / "threshold_outcomes.csv", dtype={"combination": str}))


def central_difference(f, p, index, eps: float = 1e-6) -> float:
    """(f(p + eps e_i) - f(p - eps e_i)) / (2 eps) for the entry `index` of the tensor p, changed in place
    (and restored): the brute-force derivative gradients are checked against."""
    with torch.no_grad():
        old = p[index].item()
        p[index] = old + eps
        up = f()
        p[index] = old - eps
        down = f()
        p[index] = old
    return (up - down) / (2 * eps)

