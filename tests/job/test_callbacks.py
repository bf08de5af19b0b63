"""The diagnostics callback along real training runs: bounds hold at every logged step, the flow
fidelity tracks the risk, every logger receives the same numbers, the audit CLI reproduces them."""
import pandas as pd
import pytest
from wandb_offline import wandb_run

from cotresnet.report.diagnose import diagnose
from cotresnet.rundir import contract as RD
from helpers import train_small

MEDIUM = ["model.L=4", "model.M=16", "data.n_train=32", "data.n_test=16"]


def run(tmp_path, overrides):
    summary, _ = train_small(tmp_path, *MEDIUM, *overrides)
    return summary, pd.read_csv(tmp_path / "metrics.csv")


def test_pl_ratio_above_kernel_bound_at_every_logged_step(tmp_path):
    summary, m = run(tmp_path, ["trainer.max_steps=200", "callbacks.kernel_every=20", "callbacks.ot_every=20",
                                "trainer.log_every=20", "model.dtype=float64"])
    k = m.dropna(subset=["lambda_min_tangent"])
    assert list(k["step"]) == list(range(0, 201, 20))
    assert (k["pl_lower_bound"] > 0).all()
    assert (k["pl_ratio_probe"] >= k["pl_lower_bound"]).all()
    # the probe is the whole training set here, so the probe's ratio is the training ratio
    assert (k["pl_ratio_probe"] - k["pl_ratio"]).abs().max() < 1e-8 * k["pl_ratio"].max()
    # u-gradient identity bound and distance ordering at every kernel / OT step
    assert (k["grad_norm2_u"] >= k["grad_norm2_u_lower"]).all() and (k["grad_norm2"] >= k["grad_norm2_u"]).all()
    assert (k["cot_dist_init_lower"] <= k["cot_dist_init"] + 1e-12).all()
    assert (k["cot_dist_init"] <= k["cot_dist_init_upper"] + 1e-12).all()
    assert (k["cot_dist_init_upper"] <= k["path_length"] + 1e-12).all()
    assert summary["certificate"]["lambda_min_tangent_init"] == pytest.approx(k["lambda_min_tangent"].iloc[0])
    assert summary["certificate"]["kind"] == "full" and summary["certificate"]["n"] == 32
    assert len(summary["lambda_min_feature_layers"]["final"]) == 4


def test_flow_fidelity_tracks_the_risk_for_small_dt(tmp_path):
    _, m = run(tmp_path, ["trainer.max_steps=400", "optim.dt=0.01", "trainer.log_every=10",
                          "callbacks.kernel_every=0", "callbacks.ot_every=0", "model.dtype=float64",
                          "trainer.converge_ratio=0"])
    first_half = m[m["step"] <= 200]
    rel = ((first_half["risk_predicted"] - first_half["risk_train"]) / first_half["risk_train"]).abs()
    assert rel.max() < 0.01, rel.max()
    assert m["risk_train"].iloc[-1] < 0.5 * m["risk_train"].iloc[0]  # the risk really moved


def test_csv_tensorboard_and_wandb_get_the_same_numbers_and_diagnose_reproduces_them(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary, m = run(tmp_path, ["trainer.max_steps=40", "callbacks.kernel_every=20", "callbacks.ot_every=20",
                                "logger=[csv,tensorboard,wandb]"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    from cotresnet.job.loggers import DASHBOARD_NAMES, LAYOUT, NAMESPACES

    assert set(DASHBOARD_NAMES) == set(RD.COLUMNS) - {"step"}  # every column in exactly one namespace
    assert sum(map(len, NAMESPACES.values())) == len(DASHBOARD_NAMES)
    tags = acc.Tags()["scalars"]
    assert all(t.split("/")[0] in ("train", "kernel", "transport", "certificate", "final", "study") for t in tags), tags
    for key, tag in [("risk_train", "train/risk_train"), ("pl_ratio", "train/pl_ratio"),
                     ("lambda_min_tangent", "kernel/lambda_min_tangent"), ("cot_dist_init", "transport/cot_dist_init"),
                     ("path_length", "transport/path_length")]:
        csv = m.dropna(subset=[key])
        tb = {e.step: e.value for e in acc.Scalars(tag)}
        assert sorted(tb) == list(csv["step"]), key  # measured steps only: a kernel series has no filled rows
        for step, value in zip(csv["step"], csv[key]):
            assert tb[step] == pytest.approx(value, rel=1e-6), key
    laid_out = {t for charts in LAYOUT.values() for chart in charts.values() for t in chart}
    assert laid_out <= set(DASHBOARD_NAMES.values())
    assert "custom_scalars__config__" in acc.Tags()["tensors"]  # the Custom Scalars tab's layout
    # TensorBoard's HParams tab: the swept keys first, against the study's numbers
    hp = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    from tensorboard.plugins.hparams import plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData
    start = data.FromString(hp["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.M"].number_value == 16 and start.hparams["status"].string_value == summary["status"]
    experiment = data.FromString(hp["_hparams_/experiment"]).experiment
    names = [h.name for h in experiment.hparam_infos]  # the keys set for this run (train_small's), in their order
    assert names[:6] == ["model.L", "model.M", "data.n_train", "data.n_test", "trainer.max_steps", "callbacks.kernel_every"]
    assert not any(h.name.startswith(("paths.", "logger.")) for h in experiment.hparam_infos)
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"study/min_pl_ratio", "study/log10_risk_ratio", "certificate/guaranteed_factor",
            "certificate/observed_factor", "final/risk_train"} <= metrics
    final_tb = acc.Scalars("final/risk_train")
    assert final_tb[-1].step == summary["steps"] and final_tb[-1].value == pytest.approx(summary["final"]["risk_train"])
    assert acc.Scalars("study/min_pl_ratio")[-1].value == pytest.approx(summary["min_pl_ratio"])
    wb_run = wandb_run(tmp_path)
    assert wb_run["summary"]["status"] == summary["status"]
    assert wb_run["summary"]["final/risk_train"] == pytest.approx(summary["final"]["risk_train"])
    assert wb_run["summary"]["certificate/c0"] == pytest.approx(summary["certificate"]["c0"])
    hist = wb_run["history"]
    wb = {int(h["trainer/global_step"]): h for h in hist if "train/risk_train" in h}
    assert sorted(wb) == list(m["step"])
    for _, row in m.iterrows():
        for key in ["risk_train", "grad_norm2", "pl_ratio", "risk_test", "flow_time"]:
            assert wb[int(row["step"])][f"train/{key}"] == pytest.approx(row[key], rel=1e-12)
    assert wb_run["metrics"]["*"] == "trainer/global_step"  # panels plot against the step, not the row count
    # the audit CLI recomputes the final values from particles.pt and data.pt
    audit = diagnose(tmp_path)
    final = summary["final"]
    for key in ["risk_train", "grad_norm2", "pl_ratio", "lambda_min_tangent", "pl_lower_bound",
                "lambda_min_feature", "cot_dist_init", "cot_dist_init_upper", "risk_test"]:
        assert audit["final"][key] == pytest.approx(final[key], rel=1e-4, abs=1e-12), key
    assert audit["init"]["lambda_min_tangent"] == pytest.approx(
        summary["certificate"]["lambda_min_tangent_init"], rel=1e-6)
    assert audit["init"]["cot_dist_init"] == 0.0
