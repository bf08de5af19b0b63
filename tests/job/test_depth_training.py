"""Depth-mobile particles through the framework: the Lightning step equals the plain flow_step loop for
both geometries, COT never moves a depth, the Wasserstein flow drifts the depth marginal on the
cot_vs_wasserstein task, and the audit reproduces a run."""
import pandas as pd
import pytest
import torch

from cotresnet.config.compose import compose_config
from cotresnet.job.checks import check_config
from cotresnet.model.build import student_network
from cotresnet.model.depth import flow_step
from cotresnet.report.diagnose import diagnose
from helpers import read_particles, train

TASK = ["experiment=cot_vs_wasserstein", "trainer.progress=none", "hydra.mode=RUN"]


@pytest.mark.parametrize("geometry", ["cot", "wasserstein"])
def test_lightning_training_equals_the_plain_flow_step_loop(tmp_path, geometry):
    args = [*TASK, f"optim.geometry={geometry}", "optim.depth_weight=3", "model.dtype=float64", "trainer.max_steps=6",
            "trainer.log_every=1", "callbacks.kernel_every=0", "callbacks.ot_every=0"]
    train(tmp_path, *args)
    cfg = compose_config(args)
    ds = check_config(cfg)
    net = student_network(cfg, ds.d_in, ds.d_out)
    Gs = []
    for _ in range(6):
        _, G = flow_step(net, ds.x_train, ds.y_train, cfg.optim.dt, geometry, kappa=3.0)
        Gs.append(G.item())
    final = read_particles(tmp_path)["final"]
    for k in "uwbs":
        torch.testing.assert_close(final[k], net.particles()[k], rtol=0, atol=1e-13)
    m = pd.read_csv(tmp_path / "metrics.csv")
    torch.testing.assert_close(torch.tensor(m["grad_norm2"][:6].tolist()), torch.tensor(Gs), rtol=1e-10, atol=0)


def test_cot_keeps_every_depth_and_wasserstein_drifts_the_marginal(tmp_path):
    cot, cot_dir = train(tmp_path / "cot", *TASK, "optim.geometry=cot", "callbacks.ot_every=0")
    p = read_particles(cot_dir)
    assert torch.equal(p["final"]["s"], p["init"]["s"])
    grid = 1 / (12**0.5 * 4)  # W_2 of the layer grid's atoms to Lebesgue, L = 4
    assert cot["final"]["depth_w2_uniform"] == pytest.approx(grid) and cot["final"]["depth_effective_layers"] == 4
    # the experiment's default task (kappa = 10): measured 2.1x the grid value, 4 -> 2.7 effective layers
    w, w_dir = train(tmp_path / "w", *TASK, "callbacks.ot_every=0", "plots=[png]")
    assert w["final"]["depth_w2_uniform"] > 1.5 * grid and w["final"]["depth_effective_layers"] < 3.5
    depths = pd.read_csv(w_dir / "depths.csv")
    assert set(depths.groupby("step")["count"].sum()) == {4 * 8}  # every row's histogram holds all J particles
    assert (w_dir / "plots" / "run.png").is_file()
    audit = diagnose(w_dir)
    for key in ("risk_train", "grad_norm2", "depth_w2_uniform", "lambda_min_tangent"):
        assert audit["final"][key] == pytest.approx(w["final"][key], rel=1e-4), key


def test_the_wasserstein_run_measures_its_own_distance_which_its_path_bounds(tmp_path):
    """W_COT ignores depths while the Wasserstein flow moves them: w2_dist_init is W_2 on (sqrt(kappa) s,
    theta), checked against an explicit assignment, and bounded by the path length (which includes depths)."""
    from cotresnet.diagnostics.transport import exact_w2

    w, w_dir = train(tmp_path, *TASK, "callbacks.ot_every=100", "trainer.max_steps=200")
    m = pd.read_csv(w_dir / "metrics.csv").dropna(subset=["w2_dist_init"])
    assert len(m) == 3 and (m["w2_dist_init"] <= m["path_length"]).all()
    p = read_particles(w_dir)
    cloud = lambda x: torch.cat([10**0.5 * x["s"].reshape(-1, 1), x["u"].reshape(-1, 3), x["w"].reshape(-1, 3),
                                 x["b"].reshape(-1, 1)], 1).double()
    assert w["final"]["w2_dist_init"] == pytest.approx(exact_w2(cloud(p["final"]), cloud(p["init"])).upper2 ** 0.5,
                                                       rel=1e-12)
    assert w["final"]["w2_dist_init"] > w["final"]["cot_dist_init"]  # the depths' share of the move


@pytest.mark.parametrize("weight", ["1e12", "1e6"])
def test_depths_moved_beyond_their_interval_or_collapsed_are_events_in_the_log_and_the_summary(tmp_path, weight):
    summary, _ = train(tmp_path, *TASK, f"optim.depth_weight={weight}", "trainer.max_steps=20", "trainer.log_every=5",
                       "callbacks.kernel_every=0", "callbacks.ot_every=0")
    events = " ".join(summary["events"])
    assert "exceeds the depth interval" in events or "collapsed" in events, summary["events"]
