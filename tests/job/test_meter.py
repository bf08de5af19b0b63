"""The feature-learning meter as a run logs it at its kernel steps equals the meter computed post hoc from the
run's initial and final networks (diagnostics.feature_learning, checked against brute force on its own)."""
import math

import pytest

import cotresnet
from cotresnet.diagnostics.feature_learning import feature_learning
from helpers import SMALL


@pytest.mark.parametrize("overrides, linear", [([], True), (["callbacks.n_probe=12"], False),
                                               (["optim.batch_size=6"], False)])
def test_the_logged_meter_is_the_post_hoc_meter_of_the_final_particles(tmp_path, overrides, linear):
    cfg = cotresnet.compose_config([*SMALL, "model.dtype=float64", "trainer.max_steps=30", "callbacks.kernel_every=10",
                                    "trainer.log_every=10", "trainer.converge_ratio=0", "plots=[]", *overrides])
    (summary,) = cotresnet.run_job(cfg, tmp_path / "run")
    run = cotresnet.load_run(tmp_path / "run")
    m = run.metrics.dropna(subset=["kernel_movement"])
    assert list(m["step"]) == [0, 10, 20, 30] and m["kernel_movement"].iloc[0] == 0.0
    n = summary["kernel_samples"]
    post = feature_learning(run.init, run.final, run.data.x_train[:n], run.data.y_train[:n], 30, cfg.optim.dt)
    last = m.iloc[-1]
    assert last["kernel_movement"] == pytest.approx(post.kernel_movement, rel=1e-10)
    assert last["feature_movement"] == pytest.approx(float(post.feature_movement.mean()), rel=1e-10)
    if linear:  # the flow's own samples, full batch: the linearized flow is this flow's
        assert last["linearization_distance"] == pytest.approx(post.linearization_distance, rel=1e-8)
    else:
        assert m["linearization_distance"].isna().all()
    assert all(math.isfinite(v) for v in m["feature_movement_max"])
