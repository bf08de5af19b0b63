"""Replicas: R networks stepped together equal R sequential runs, and a vectorized sweep is
indistinguishable to the report from the same sweep run job by job."""
import json

import pandas as pd
import pytest
import torch

from cotresnet.model import ReplicatedResNet, build_model
from cotresnet.report import collect
from cotresnet.sweeper import replica_config
from cotresnet.train import check_config, compose_config, train
from test_train import TRAIN, cli

BASE = ["model.L=3", "model.M=8", "data.n_train=24", "data.n_test=8", "callbacks.n_probe=12",
        "trainer.max_steps=40", "callbacks.kernel_every=20", "callbacks.ot_every=20", "trainer.log_every=5",
        "model.dtype=float64"]
REPLICAS = ["seed=0 init.scale_u=0.5 optim.dt=0.1", "seed=1 init.scale_u=2.0 optim.dt=0.05",
            "seed=2 init.scale_u=1.0 optim.dt=0.2 data.seed=3"]


def test_replicated_forward_equals_each_network():
    cfgs = [replica_config(compose_config(BASE), r) for r in REPLICAS]
    nets = [build_model(c, 4, 2) for c in cfgs]
    rep = ReplicatedResNet(nets)
    x = torch.randn(3, 10, 4, dtype=torch.float64)
    out = rep(x)
    for r, net in enumerate(nets):
        torch.testing.assert_close(out[r], net(x[r]), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(rep.replica(r).u, net.u.detach())


def test_replicas_equal_sequential_runs_to_round_off(tmp_path):
    job_cfg = compose_config(BASE + ["sweep.vectorize=[seed,init.scale_u,optim.dt,data.seed]"])
    members = []
    for i, r in enumerate(REPLICAS):
        c = replica_config(job_cfg, r)
        (tmp_path / f"rep{i}").mkdir()
        members.append((c, check_config(c), tmp_path / f"rep{i}"))
    together = train(job_cfg, members[0][1], tmp_path, replicas=members)
    for i, (c, ds, _) in enumerate(members):
        alone_dir = tmp_path / f"alone{i}"
        alone_dir.mkdir()
        alone = train(c, ds, alone_dir)
        a = torch.load(alone_dir / "particles.pt", weights_only=True)
        b = torch.load(tmp_path / f"rep{i}" / "particles.pt", weights_only=True)
        for which in ("init", "final"):
            for k in "uwb":
                torch.testing.assert_close(b[which][k], a[which][k], rtol=1e-10, atol=1e-12)
        for key in ("risk_train", "grad_norm2", "pl_ratio", "lambda_min_tangent", "cot_dist_init", "path_length",
                    "risk_predicted"):
            assert together[i]["final"][key] == pytest.approx(alone["final"][key], rel=1e-8), key
        ma, mb = pd.read_csv(alone_dir / "metrics.csv"), pd.read_csv(tmp_path / f"rep{i}" / "metrics.csv")
        assert list(ma["step"]) == list(mb["step"])
        pd.testing.assert_frame_equal(ma, mb, rtol=1e-8)
        assert together[i]["status"] == alone["status"]


def test_a_diverging_replica_stops_alone(tmp_path):
    job_cfg = compose_config(BASE + ["sweep.vectorize=[optim.dt]", "model.dtype=float32"])
    members = []
    for i, r in enumerate(["optim.dt=0.1", "optim.dt=1000"]):
        c = replica_config(job_cfg, r)
        (tmp_path / f"rep{i}").mkdir()
        members.append((c, check_config(c), tmp_path / f"rep{i}"))
    ok, bad = train(job_cfg, members[0][1], tmp_path, replicas=members)
    assert bad["status"] == "diverged" and ok["status"] == "max_steps" and ok["steps"] == 40
    assert all(v is None or abs(v) < float("inf") for v in bad["final"].values())


@pytest.mark.slow
def test_vectorized_sweep_is_indistinguishable_to_the_report(tmp_path):
    args = ["-m", "seed=0,1", "init.scale_u=0.5,1.0", *BASE, "model.M=4,8"]
    r1 = cli(TRAIN + args + [f"hydra.sweep.dir={tmp_path / 'seq'}"], cwd=tmp_path)
    r2 = cli(TRAIN + args + ["sweep.vectorize=[seed,init.scale_u]", f"hydra.sweep.dir={tmp_path / 'vec'}"],
             cwd=tmp_path)
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr[-2000:], r2.stderr[-2000:])
    assert "8 jobs: 8 finished" in r1.stdout and "8 jobs: 8 finished" in r2.stdout
    assert r2.stdout.count("sweep.replicas=") == 2  # two jobs launched, four replicas each
    key = ["sweep.model.M", "sweep.seed", "sweep.init.scale_u"]
    seq = collect(tmp_path / "seq").sort_values(key).reset_index(drop=True)
    vec = collect(tmp_path / "vec").sort_values(key).reset_index(drop=True)
    assert len(seq) == len(vec) == 8
    for col in ("risk_train", "risk_test", "min_pl_ratio", "lambda_min_tangent_init", "cot_dist_init"):
        pd.testing.assert_series_equal(seq[col], vec[col], rtol=1e-8)
    replica_dirs = sorted((tmp_path / "vec").glob("*/seed=*"))
    assert len(replica_dirs) == 8
    for d in replica_dirs:
        assert json.loads((d / "summary.json").read_text())["seed"] == int(d.name.split(",")[0].split("=")[1])
