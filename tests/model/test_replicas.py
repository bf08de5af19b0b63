"""Replicas: R networks stepped together equal R sequential runs, and a vectorized sweep is
indistinguishable to the report from the same sweep run job by job."""
import json

import pandas as pd
import pytest
import torch

from cotresnet.config.replicas import replica_config
from cotresnet.model.build import student_network
from cotresnet.model.replicas import ReplicatedResNet
from helpers import read_particles, train_small

BASE = ["trainer.max_steps=40", "callbacks.kernel_every=20", "callbacks.ot_every=20", "trainer.log_every=5",
        "model.dtype=float64"]
REPLICAS = ["seed=0 init.scale_u=0.5 optim.dt=0.1", "seed=1 init.scale_u=2.0 optim.dt=0.05",
            "seed=2 init.scale_u=1.0 optim.dt=0.2 data.seed=3"]


def replicas_override(replicas):
    return "sweep.replicas=[" + ",".join(f"'{r}'" for r in replicas) + "]"


def test_replicated_forward_equals_each_network(small):
    cfgs = [replica_config(small(*BASE), r) for r in REPLICAS]
    nets = [student_network(c, 4, 2) for c in cfgs]
    rep = ReplicatedResNet(nets)
    x = torch.randn(3, 10, 4, dtype=torch.float64)
    out = rep(x)
    for r, net in enumerate(nets):
        torch.testing.assert_close(out[r], net(x[r]), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(rep.replica(r).u, net.u.detach())


def test_replicas_equal_sequential_runs_to_round_off(tmp_path):
    together, job = train_small(tmp_path / "job", *BASE, replicas_override(REPLICAS))
    for i, r in enumerate(REPLICAS):
        alone, alone_dir = train_small(tmp_path / f"alone{i}", *BASE, *r.split())
        rep_dir = job / r.replace(" ", ",")
        a, b = read_particles(alone_dir), read_particles(rep_dir)
        for which in ("init", "final"):
            for k in "uwb":
                torch.testing.assert_close(b[which][k], a[which][k], rtol=1e-10, atol=1e-12)
        for key in ("risk_train", "grad_norm2", "pl_ratio", "lambda_min_tangent", "cot_dist_init", "path_length",
                    "risk_predicted"):
            assert together[i]["final"][key] == pytest.approx(alone["final"][key], rel=1e-8), key
        ma, mb = pd.read_csv(alone_dir / "metrics.csv"), pd.read_csv(rep_dir / "metrics.csv")
        assert list(ma["step"]) == list(mb["step"])
        pd.testing.assert_frame_equal(ma, mb, rtol=1e-8)
        assert together[i]["status"] == alone["status"]
        assert json.loads((rep_dir / "summary.json").read_text())["seed"] == alone["seed"]


def test_a_diverging_replica_stops_alone_with_its_own_step_count(tmp_path):
    (ok, bad), _ = train_small(tmp_path / "job", *BASE, "model.dtype=float32",
                               replicas_override(["optim.dt=0.1", "optim.dt=1000"]))
    assert bad["status"] == "diverged" and ok["status"] == "max_steps" and ok["steps"] == 40
    assert bad["steps"] == bad["diverged_at"] < 40
    assert all(v is None or abs(v) < float("inf") for v in bad["final"].values())


