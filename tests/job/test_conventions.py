"""What lightning-hydra-template users reach for: debug configs, tags, a paths group, an optimized metric
for Hydra's optimizing sweepers (Optuna end to end), further Trainer options; files that follow the
umask; an entry point that imports no torch (fast shell completion)."""
import math
import os
import stat

import pytest

from cotresnet.config.compose import CONF_DIR, compose_config
from cotresnet.errors import ConfigError
from cotresnet.job.checks import check_job
from cotresnet.train import _returned
from helpers import train_small


def test_debug_configs(tmp_path):
    fast = compose_config(["debug=fast"])
    assert fast.trainer.max_steps == 5 and fast.callbacks.kernel_every == 0 and "debug" in fast.tags
    summary, _ = train_small(tmp_path / "overfit", "debug=overfit", "model.L=16", "model.M=128", "data.n_train=8")
    assert summary["status"] == "converged" and summary["final"]["risk_train"] <= 1e-6 * summary["risk_init"]


def test_tags_reach_the_summary(tmp_path):
    summary, _ = train_small(tmp_path / "run", "trainer.max_steps=2", "tags=[baseline,wide]")
    assert summary["tags"] == ["baseline", "wide"]


def test_paths_root_moves_runs_and_sweeps():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["paths.root=/scratch/me"], return_hydra_config=True)
        assert str(cfg.hydra.run.dir).startswith("/scratch/me/outputs/")
        assert str(cfg.hydra.sweep.dir).startswith("/scratch/me/multirun/")


def test_the_job_returns_its_optimized_metric(small):
    finished = {"status": "max_steps", "final": {"risk_test": 0.25}, "min_pl_ratio": 3.0}
    assert _returned(small("optimized_metric=risk_test"), [finished]) == 0.25
    assert _returned(small("optimized_metric=min_pl_ratio"), [finished]) == 3.0
    assert _returned(small("optimized_metric=risk_test"), [{**finished, "status": "diverged"}]) == math.inf
    assert _returned(small(), [finished]) is finished


def test_further_trainer_options_pass_through_but_not_those_that_change_the_step(tmp_path, small):
    from cotresnet.job.fit import _trainer

    cfg = small("+trainer.extra.detect_anomaly=true")
    check_job(cfg, tmp_path / "ok")
    assert _trainer(cfg, tmp_path, [])._detect_anomaly is True
    for option in ("gradient_clip_val=1.0", "accumulate_grad_batches=2", "max_time=00:00:01:00", "devices=2"):
        with pytest.raises(ConfigError, match=f"trainer.extra.{option.split('=')[0]}"):
            check_job(small(f"+trainer.extra.{option}"), tmp_path / "bad")


def test_files_follow_the_umask(tmp_path):
    from cotresnet.report.cli import report

    old = os.umask(0o002)  # a group-shared filesystem
    try:
        _, run = train_small(tmp_path / "sweep" / "0_job", "trainer.max_steps=2")
        report(tmp_path / "sweep")
    finally:
        os.umask(old)
    for path in (run / "summary.json", run / "particles.pt", run / "data.pt", run / "metrics.csv",
                 run / "identity.json", run / "checkpoints" / "last.ckpt", tmp_path / "sweep" / "report" / "report.csv"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


