"""What a run writes says no more than it measured (issue 22, items 3-5): a diverged run's particles are those
its summary describes, the path length bounds W_COT in float32 too, the certificate names the conditions of
its theorem."""
import pandas as pd
import pytest

from cotresnet.report.diagnose import diagnose
from helpers import read_particles, train, train_small


@pytest.mark.parametrize("overrides", [["model.L=4", "model.M=32", "optim.dt=20"],
                                       ["model.L=3", "model.M=8", "optim.dt=400", "model.dtype=float64"]])
def test_a_diverged_run_keeps_the_particles_its_summary_and_last_row_describe(tmp_path, overrides):
    summary, run = train_small(tmp_path, *overrides, "trainer.max_steps=300", "callbacks.kernel_every=0",
                               "callbacks.ot_every=0")
    assert summary["status"] == "diverged"
    held = read_particles(run)["meta"]["step"]
    assert held == summary["steps"] == summary["particles_step"] == summary["diverged_at"]
    last = pd.read_csv(run / "metrics.csv").iloc[-1]
    if summary["final"]["step"] == held:  # their risk is finite: the row describes them
        assert last["step"] == held and last["risk_train"] == summary["final"]["risk_train"]
        assert diagnose(run)["final"]["risk_train"] == summary["final"]["risk_train"]
    else:  # their risk is not: the last finite row is the step before
        assert summary["final"]["step"] == held - 1 and not diagnose(run)["final"]["risk_train"] < float("inf")


@pytest.mark.parametrize("overrides", [["optim.parameterization=standard"], ["model.L=4", "model.M=16", "optim.dt=0.2"]])
def test_the_path_length_bounds_w_cot_at_every_row_in_float32(tmp_path, overrides):
    """Under `standard` a float32 update is of the order of the rounding of theta: at the default size the
    nominal steps alone summed to less than the distance they realized (by ~1e-9 from step 200 on, as the
    audit found: 0.0037562628 < 0.0037562645)."""
    _, run = train(tmp_path, *overrides, "trainer.max_steps=300", "trainer.log_every=50", "callbacks.kernel_every=0",
                   "callbacks.ot_every=50", "trainer.converge_ratio=0")
    m = pd.read_csv(run / "metrics.csv").dropna(subset=["cot_dist_init"])
    assert len(m) == 7 and (m["cot_dist_init"] > 0).iloc[1:].all()
    assert (m["path_length"] >= m["cot_dist_init"]).all(), (m["path_length"] - m["cot_dist_init"]).min()


def test_a_relu_run_is_outside_the_theory_whatever_its_region_says(tmp_path):
    relu, _ = train_small(tmp_path / "relu", "model.activation=relu", "trainer.max_steps=5")
    smooth, _ = train_small(tmp_path / "tanh", "trainer.max_steps=5", "optim.dt=0.001")
    c = relu["certificate"]
    assert c["conditions"]["smooth_activation"] is False and c["inside_theory"] is False
    assert smooth["certificate"]["inside_theory"] is True and all(smooth["certificate"]["conditions"].values())


def test_a_converged_run_reports_particles_that_meet_its_rule(tmp_path):
    """Large steps overshoot: whatever the step after the rule held would do, a converged run's final row
    and particles.pt are the particles whose risk met it, and each step has one row."""
    from cotresnet.api import load_run

    # experiment=scale_threshold near its threshold: seed 0's risk meets the rule at step 98, not at 99
    summaries, _ = train(tmp_path, "model.L=2", "model.M=32", "data.n_train=32", "data.n_test=16", "optim.dt=3.0",
                         "callbacks=none", "trainer.converge_ratio=1e-3", "trainer.max_steps=400",
                         "trainer.log_every=50", "init.scale_u=6.160575079", "sweep.replicas=['seed=0','seed=1','seed=2']")
    assert summaries[0]["status"] == "converged"
    for s in summaries:
        rows = pd.read_csv(f"{s['run_dir']}/metrics.csv")
        assert rows["step"].is_unique and rows["step"].iloc[-1] == s["steps"] == s["final"]["step"]
        run = load_run(s["run_dir"])
        x, y = run.data.x_train, run.data.y_train
        assert float(run.final.risk(x, y).detach()) == pytest.approx(s["final"]["risk_train"], rel=1e-5)
        if s["status"] == "converged":
            assert s["final"]["risk_train"] <= 1e-3 * s["risk_init"]


def test_each_replica_ends_with_its_own_final_row(tmp_path):
    """A replica that converges before the others stops at its own step: its last row is its final particles'
    row at that step (the report reads a finished run whose last row is not as corrupt)."""
    summaries, run = train_small(tmp_path, "trainer.converge_ratio=0.5", "trainer.max_steps=200",
                                 "sweep.replicas=['optim.dt=1.0','optim.dt=0.02']")
    fast, slow = summaries
    assert fast["status"] == "converged" and fast["steps"] < slow["steps"]
    for s in summaries:
        last = pd.read_csv(f"{s['run_dir']}/metrics.csv").iloc[-1]
        assert last["step"] == s["steps"] == s["final"]["step"] == read_particles(s["run_dir"])["meta"]["step"]
