"""Replicas: R networks stepped together equal R sequential runs, and a vectorized sweep is
indistinguishable to the report from the same sweep run job by job."""
import json

import pandas as pd
import pytest
import torch

from cotresnet.model import student_network
from cotresnet.replicas import ReplicatedResNet
from cotresnet.report import collect
from cotresnet.sweeper import replica_config
from helpers import TRAIN, cli, read_particles, train_small

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


@pytest.mark.slow
def test_vectorized_sweep_is_indistinguishable_to_the_report(tmp_path):
    args = ["-m", "seed=0,1", "init.scale_u=0.5,1.0", "model.L=3", "data.n_train=24", "data.n_test=8", *BASE,
            "model.M=4,8"]
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
