"""kernel_regime: the step per scale, the exponents on a planted table, and the meter of a real run against the
meter recomputed from its networks."""
import numpy as np
import pandas as pd
import pytest

from cotresnet import load_run
from cotresnet.diagnostics.feature_learning import feature_learning
from cotresnet.studies import kernel_regime as KR
from cotresnet.studies.cli import STUDIES
from cotresnet.studies.common import run_replicas


def test_step_keeps_the_stable_fraction():
    assert KR.step_for(0.5, 0.2) == 0.2 and KR.step_for(4.0, 0.2) == pytest.approx(0.2 / 16)


def test_exponents_recover_a_planted_lazy_law():
    rng = np.random.default_rng(0)
    s, M = np.meshgrid([0.25, 1, 4, 16], [16, 64, 256])
    table = pd.DataFrame({"scale_u": s.ravel(), "M": M.ravel()})
    table["kernel_movement"] = table.scale_u**-1.0 * np.exp(rng.normal(0, 0.03, len(table)))
    a, b, by_scale = KR.exponents(table)
    assert a.contains(-1.0) and b.contains(0.0) and abs(by_scale[1.0]) < 0.1


def test_meter_of_a_trained_replica_is_its_networks(tmp_path):
    summaries = run_replicas(tmp_path / "job", ["model.L=2", "model.M=6", "data.n_train=8", "data.n_test=2",
                                                "model.dtype=float64", "trainer.max_steps=15"],
                             ["seed=0 init.scale_u=1 optim.dt=0.2"])
    row = KR.meters(summaries[0], 1.0, 0.2)
    run = load_run(summaries[0]["run_dir"])
    again = feature_learning(run.init, run.final, run.data.x_train, run.data.y_train, 15, 0.2)
    assert row["steps"] == 15 and row["kernel_movement"] == pytest.approx(again.kernel_movement, rel=1e-12)
    assert 0 < row["linearization_distance"] < 1


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(STUDIES, "kernel_regime")
    assert "kernel movement in M" in line
