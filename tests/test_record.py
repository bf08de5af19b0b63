"""The flow's record and clock without Lightning, and the numbers they give along real runs:
the fidelity clock under both parameterizations, full-batch rows under minibatch SGD."""
import math

import pandas as pd
import pytest
import torch

from cotresnet.data import Minibatches
from cotresnet.diagnostics.measures import kernel_diagnostics
from cotresnet.job.checks import check_config
from cotresnet.model.build import student_network
from cotresnet.record import FlowRecord, flow_time_step, learning_rate
from helpers import data, make_net, train_small


def test_record_accumulates_the_fidelity_integral_and_the_path():
    rec = FlowRecord(converge_ratio=0.0)
    risks, Gs, tau = [1.0, 0.8, 0.7], [0.5, 0.4, 0.2], 0.1
    for k, (r, G) in enumerate(zip(risks, Gs)):
        assert rec.step(k, r, G, tau, step_length=0.01).tolist() == [True]
        row = rec.step_row(0)
        integral = sum(tau * g / q for g, q in zip(Gs[:k], risks[:k]))
        assert row["risk_predicted"] == pytest.approx(1.0 * math.exp(-integral))
        assert row["path_length"] == pytest.approx(0.01 * k) and row["flow_time"] == pytest.approx(k * tau)
    assert float(rec.min_pl_ratio[0]) == pytest.approx(0.2 / 0.7)
    rec.final(0, 3, 0.6, 0.1, tau)  # the final particles' row counts too
    assert float(rec.min_pl_ratio[0]) == pytest.approx(0.1 / 0.6)
    rec.finish(3)
    s = rec.summary(0, tau)
    assert s["status"] == "max_steps" and s["steps"] == 3 and s["flow_time"] == pytest.approx(0.3)


def test_every_member_is_updated_at_once_as_each_alone_would_be():
    """R members stepped together give, member by member, what R records of one member give."""
    g = torch.Generator().manual_seed(0)
    R, steps = 5, 12
    risk = torch.rand(steps, R, generator=g, dtype=torch.float64) + 0.1
    G = torch.rand(steps, R, generator=g, dtype=torch.float64)
    risk[7, 2], G[4, 3] = math.inf, math.nan  # member 2 diverges at step 7, member 3 at step 4
    taus, ratios = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.05]), [0.0, 0.5, 0.0, 0.0, 0.9]
    together = FlowRecord(ratios, members=R)
    alone = [FlowRecord(ratios[r]) for r in range(R)]
    for k in range(steps):
        took = together.step(k, risk[k], G[k], taus, 0.01 * G[k])
        for r in range(R):
            assert alone[r].step(k, risk[k, r], G[k, r], taus[r], 0.01 * G[k, r]).item() == took[r].item()
    together.finish(steps)
    for r in range(R):
        alone[r].finish(steps)
        assert together.summary(r, float(taus[r])) == alone[r].summary(0, float(taus[r]))
        assert together.step_row(r) == alone[r].step_row(0)
    assert [together.status_of(r) for r in (2, 3)] == ["diverged", "diverged"]
    assert [together.steps(r) for r in (2, 3)] == [7, 4]


def test_divergence_at_step_0_and_convergence_are_recorded():
    rec = FlowRecord()
    assert not rec.step(0, math.inf, 1.0, 0.1, 0.0)[0]
    assert rec.status_of(0) == "diverged" and rec.steps(0) == 0 and rec.done
    s = rec.summary(0, 0.1)
    assert s["final"] == {} and s["risk_init"] is None and s["diverged_at"] == 0 and s["particles_step"] == 0
    rec = FlowRecord(converge_ratio=0.5)
    rec.step(0, 1.0, 1.0, 0.1, 0.0)
    rec.step(1, 0.4, 1.0, 0.1, 0.0)
    assert rec.status_of(0) == "converged" and rec.steps(0) == 1


def test_a_converged_flow_keeps_the_particles_that_meet_its_rule():
    """Converging at step k keeps theta_k (the step is not taken: the next one could overshoot the rule): the
    totals stop at t_k, and a reopened flow counts its own steps on from k while the job stepped on."""
    rec = FlowRecord(converge_ratio=[0.5, 0.5], members=2)
    rec.step(0, [1.0, 1.0], [2.0, 2.0], 0.1, [0.3, 0.3])
    assert rec.step(1, [0.4, 0.8], [1.2, 1.6], 0.1, [0.7, 0.7]).all()
    assert rec.status_of(0) == "converged" and rec.steps(0) == 1 and rec.running.tolist() == [False, True]
    assert rec.path_length.tolist() == [0.3, 1.0]
    assert rec.fidelity_integral == pytest.approx([0.2, 0.2 + 0.1 * 1.6 / 0.8])
    final = rec.final(0, rec.steps(0), 0.4, 1.2, 0.1)
    assert final["step"] == 1 and final["path_length"] == 0.3 and final["risk_predicted"] == pytest.approx(math.exp(-0.2))
    rec.step(2, [0.4, 0.6], [1.2, 1.0], 0.1, [0.0, 0.1])
    rec.reopen([0.1, 0.1])
    assert rec.offset.tolist() == [2, 0] and rec.running.all()
    rec.step(3, [0.3, 0.2], [1.0, 1.0], 0.1, [0.2, 0.2])
    assert rec.step_row(0)["step"] == 1 and rec.step_row(0)["flow_time"] == pytest.approx(0.1)
    rec.finish(5)
    assert rec.steps(0) == 3 and rec.steps(1) == 5


def test_certificate_is_set_once_and_its_region_is_checked():
    net = make_net(L=3, M=8)
    x, y = data(N=6)
    rec = FlowRecord()
    kd = kernel_diagnostics(net, x, y)
    out = rec.kernels(0, kd, 6, "tanh", 0.1)
    c = rec.members[0].certificate
    assert c.kind == "full" and c.c0 == pytest.approx(kd.lambda_min.value / 6) and out["lambda_ratio"] == 1.0
    with torch.no_grad():
        net.u.mul_(0.1)  # a much smaller kernel: lambda_min falls below half its initial value
    out = rec.kernels(0, kernel_diagnostics(net, x, y), 6, "tanh", 0.1)
    assert out["lambda_ratio"] < 0.5 and not c.inside and rec.members[0].certificate is c
    probe = FlowRecord()
    probe.kernels(0, kd, 60, "tanh", 0.1)
    assert probe.members[0].certificate.kind == "probe"
    rec2 = FlowRecord()
    rec2.kernels(0, kd, 6, "tanh", 0.1)
    row = rec2.log_row(0, {"path_length": 2 * rec2.members[0].certificate.radius})
    assert row["path_over_radius"] == pytest.approx(2.0) and not rec2.members[0].certificate.inside


@pytest.mark.parametrize("activation, n_train, tau, fails", [
    ("tanh", 6, 1e-9, []), ("relu", 6, 1e-9, ["smooth_activation"]), ("tanh", 60, 1e-9, ["full_kernel"]),
    ("silu", 6, 1e3, ["continuous_time"]), ("relu", 60, 1e3, ["smooth_activation", "full_kernel", "continuous_time"]),
])
def test_the_certificate_says_which_conditions_of_the_theorem_hold(activation, n_train, tau, fails):
    kd = kernel_diagnostics(make_net(L=3, M=8), *data(N=6))
    rec = FlowRecord()
    rec.kernels(0, kd, n_train, activation, tau)
    s = rec.members[0].certificate.summary(1.0, 0.5)
    assert sorted(k for k, ok in s["conditions"].items() if not ok) == sorted(fails)
    assert s["inside_theory"] == (not fails) and s["step_over_flow"] == pytest.approx(tau * kd.lambda_max / 6)


def test_record_state_round_trips_and_reopens_only_an_unsatisfied_convergence():
    rec = FlowRecord(converge_ratio=0.5)
    rec.step(0, 1.0, 1.0, 0.1, 0.0)
    rec.step(1, 0.4, 1.0, 0.1, 0.0)
    again = FlowRecord()
    again.load_state_dict(rec.state_dict())
    assert again.summary(0, 0.1) == rec.summary(0, 0.1)
    again.reopen(0.5)
    assert again.status_of(0) == "converged"
    again.reopen(0.1)
    assert again.status_of(0) == "running" and int(again.stopped_at[0]) == -1 and float(again.converge_ratio[0]) == 0.1


def test_clock_of_both_parameterizations():
    assert flow_time_step(0.1, 4, 8, "mean_field") == 0.1
    assert flow_time_step(0.1, 4, 8, "standard") == pytest.approx(0.1 / 32)
    for p in ("mean_field", "standard"):  # one step covers lr / (L M) of flow time
        assert flow_time_step(0.3, 5, 7, p) == pytest.approx(learning_rate(0.3, 5, 7, p) / 35)


def test_standard_parameterization_prediction_matches_its_risk(tmp_path):
    # at L M = 24 a standard step covers dt / 24 of flow time: the prediction must use that clock
    summary, run = train_small(tmp_path, "optim.parameterization=standard", "optim.dt=2.0", "model.dtype=float64",
                               "trainer.max_steps=300", "trainer.log_every=10", "callbacks.kernel_every=0",
                               "callbacks.ot_every=0", "trainer.converge_ratio=0")
    m = pd.read_csv(run / "metrics.csv")
    assert m["risk_train"].iloc[-1] < 0.7 * m["risk_train"].iloc[0]  # the risk moved
    rel = ((m["risk_predicted"] - m["risk_train"]) / m["risk_train"]).abs()
    assert rel.max() < 0.02, rel.max()
    assert (m["flow_time"] - m["step"] * 2.0 / 24).abs().max() < 1e-12
    assert summary["flow_time"] == pytest.approx(300 * 2.0 / 24)


def test_minibatch_rows_are_full_batch_quantities(tmp_path, small):
    args = ["optim.batch_size=5", "model.dtype=float64", "trainer.max_steps=30", "trainer.log_every=3",
            "callbacks.kernel_every=0", "callbacks.ot_every=0", "trainer.converge_ratio=0", "optim.dt=0.05"]
    summary, run = train_small(tmp_path, *args)
    cfg = small(*args)
    ds = check_config(cfg)
    net = student_network(cfg, ds.d_in, ds.d_out).detached(backprop="autograd")
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate(0.05, 3, 8, "mean_field"))
    full = []
    for x, y in Minibatches(ds.x_train, ds.y_train, 5, 30, cfg.seed):
        full.append(net.risk(ds.x_train, ds.y_train).item())
        opt.zero_grad()
        net.risk(x, y).backward()
        opt.step()
    m = pd.read_csv(run / "metrics.csv")
    for step, risk in zip(m["step"][:-1], m["risk_train"][:-1]):
        assert risk == pytest.approx(full[step], rel=1e-12), step
    assert summary["risk_init"] == pytest.approx(full[0], rel=1e-12)
    assert m["risk_train"].iloc[-1] == pytest.approx(net.risk(ds.x_train, ds.y_train).item(), rel=1e-12)
