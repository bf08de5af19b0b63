"""The studies' shared pieces: the plain gradient-descent loop against run_job's trajectory (float64, to round-off),
the verdict line and files, and the fits on planted data."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cotresnet import load_run
from cotresnet.studies import common as C
from cotresnet.studies import stats as ST

SMALL = ["model.L=3", "model.M=8", "data.n_train=24", "data.n_test=8", "model.dtype=float64", "optim.dt=0.2"]


def test_plain_loop_follows_run_jobs_trajectory_to_round_off(tmp_path):
    replicas = C.replica_list(seed=[0, 3])
    steps = 10
    summaries = C.run_replicas(tmp_path / "job", [*SMALL, f"trainer.max_steps={steps}", "trainer.log_every=1"],
                               replicas)
    nets, data = C.config_networks(SMALL, replicas)
    risks = []
    net = C.gradient_descent(nets, data.x_train, data.y_train, [0.2, 0.2], steps,
                             observe=lambda k, n: risks.append(n.risks(data.x_train.expand(2, -1, -1),
                                                                       data.y_train.expand(2, -1, -1)).detach()))
    for r, summary in enumerate(summaries):
        run = load_run(summary["run_dir"])
        logged = run.metrics["risk_train"].to_numpy()
        np.testing.assert_allclose(torch.stack(risks)[:, r].numpy(), logged, rtol=1e-12)
        for k in "uwb":
            torch.testing.assert_close(getattr(net, k).detach()[r], getattr(run.final, k).detach(), rtol=1e-11,
                                       atol=1e-13)
            torch.testing.assert_close(getattr(nets[r], k).detach(), getattr(run.init, k).detach(), rtol=0, atol=0)


def test_standard_steps_are_the_mean_field_steps_with_dt_over_LM():
    nets, data = C.config_networks(SMALL, C.replica_list(seed=[1]))
    a = C.gradient_descent(nets, data.x_train, data.y_train, [0.2], 3)
    nets, _ = C.config_networks(SMALL, C.replica_list(seed=[1]))
    b = C.gradient_descent(nets, data.x_train, data.y_train, [0.2 * 3 * 8], 3, parameterization="standard")
    torch.testing.assert_close(C.flat_particles(a), C.flat_particles(b), rtol=1e-13, atol=1e-15)


def test_verdict_line_and_files(tmp_path):
    from cotresnet.studies.figures import panels

    v = C.Verdict("demo", "a source", "the exponent is -1", "slope", -0.98, -1.05, -0.91, "-1", True, runtime_s=12.4)
    assert v.line() == "demo: slope = -0.98 [-1.05, -0.91] (95%) vs claimed -1: PASS (12 s)"
    fig, _ = panels(1)
    C.write_outputs(tmp_path / "demo", v, pd.DataFrame({"L": [1, 2]}), fig)
    saved = json.loads((tmp_path / "demo" / "verdict.json").read_text())
    assert saved["verdict"] == "PASS" and saved["line"] == v.line()
    assert (tmp_path / "demo" / "figure.png").stat().st_size > 0
    assert pd.read_csv(tmp_path / "demo" / "table.csv")["L"].tolist() == [1, 2]


def test_intervals_cover_a_planted_mean_and_bootstrap_a_planted_slope():
    rng = np.random.default_rng(0)
    covered = sum(ST.t_interval(rng.normal(3.0, 1.0, 10)).contains(3.0) for _ in range(400))
    assert 0.92 < covered / 400 < 0.98  # a 95 % interval covers 95 % of the time
    L = np.array([4, 8, 16, 32, 64])
    Y = L[None, :] ** -0.7 * np.exp(rng.normal(0, 0.05, (30, 5)))
    iv = ST.bootstrap(lambda Z: ST.loglog_slope(L, Z.mean(0)), Y)
    assert iv.contains(-0.7) and iv.hi - iv.lo < 0.1


def test_exponent_with_correction_recovers_a_planted_order_where_a_plain_slope_does_not():
    h = 1.0 / np.array([4, 8, 16, 32, 64])
    err = 2.0 * h * (1 + h)  # the next order of an Euler error
    assert ST.exponent_with_correction(h, err) == pytest.approx(1.0, abs=0.01)
    assert abs(ST.loglog_slope(h, err) - 1.0) > 0.05


def test_loglinear_fit_recovers_two_planted_exponents():
    rng = np.random.default_rng(1)
    L, M = np.meshgrid([2, 4, 8, 16], [16, 32, 64, 128])
    X = np.column_stack([L.ravel(), M.ravel()])
    y = X[:, 0] ** -1.0 * X[:, 1] ** 0.5 * np.exp(rng.normal(0, 0.02, len(X)))
    a, b = ST.loglinear_fit(X, y)
    assert a.contains(-1.0) and b.contains(0.5) and a.hi - a.lo < 0.1


def test_line_root_and_parabola_vertex():
    assert ST.line_root([0.3, 0.5, 0.7], [0.2, 0.0, -0.2]) == pytest.approx(0.5)
    x = np.linspace(-3, 3, 13)
    assert ST.parabola_vertex(x, (x - 0.7) ** 2) == pytest.approx(0.7)
    assert ST.parabola_vertex(x, x) == -3.0  # minimum at the end of the grid


def test_expansion_exponent_covers_a_planted_order_that_a_truncated_fit_misses():
    h = 0.4 / 2.0 ** np.arange(6)
    # an expansion whose terms fall off (0.2, 0.05, 0.01 at the largest h): the asymptotic regime
    E = np.array([c * h * (1 + 0.5 * h - 0.3 * h**2 + 0.2 * h**3) for c in (0.9, 1.0, 1.1, 1.3)])
    per_seed = [ST.exponent_with_correction(h, e, 2) for e in E]
    assert not ST.t_interval(per_seed).contains(1.0)  # deterministic: the seeds agree to round-off, biased
    iv = ST.expansion_exponent(h, E, order=2)
    assert iv.contains(1.0) and iv.hi - iv.lo < 0.05
