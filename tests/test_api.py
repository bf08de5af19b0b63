"""The public API: every name resolves, the README's recipe runs as written, a run read back reproduces
its logged numbers exactly, a sweep reads back as one table."""
import re

import pytest
import torch

import cotresnet
from cotresnet.errors import ConfigError, RunDirError
from helpers import ROOT, SMALL


def test_every_public_name_resolves_and_nothing_else_does():
    for name in cotresnet.__all__:
        assert getattr(cotresnet, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cotresnet.nope  # noqa: B018
    assert set(cotresnet.__all__) <= set(dir(cotresnet))


def test_the_readme_python_recipe_runs_as_written(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Using cotresnet from Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # its own assert checks the logged final risk
    assert namespace["run"].summary["status"] in ("max_steps", "converged")
    assert namespace["w"].lower <= namespace["w"].upper and namespace["audit"]["final"]["risk_train"] > 0


@pytest.mark.parametrize("overrides", [[], ["model.dtype=float64"], ["optim.batch_size=8", "model.backprop=recompute"]])
def test_load_run_rebuilds_both_networks_and_reproduces_the_logged_risks(tmp_path, overrides):
    cfg = cotresnet.compose_config([*SMALL, "trainer.max_steps=9", "plots=[]", *overrides])
    (summary,) = cotresnet.run_job(cfg, tmp_path / "run")
    run = cotresnet.load_run(tmp_path / "run")
    x, y = run.data.x_train, run.data.y_train
    assert x.dtype == run.final.u.dtype == getattr(torch, cfg.model.dtype)
    assert run.final.risk(x, y).item() == summary["final"]["risk_train"] == run.metrics["risk_train"].iloc[-1]
    assert run.init.risk(x, y).item() == summary["risk_init"] == run.metrics["risk_train"].iloc[0]
    assert run.config["model"]["L"] == 3 and run.summary == summary


def test_run_job_returns_a_summary_per_replica_and_load_sweep_reads_them(tmp_path):
    cfg = cotresnet.compose_config([*SMALL, "trainer.max_steps=4", "plots=[]", "sweep.replicas=['seed=1','seed=2']"])
    summaries = cotresnet.run_job(cfg, tmp_path / "sweep" / "0_job")
    assert [s["seed"] for s in summaries] == [1, 2]
    table = cotresnet.load_sweep(tmp_path / "sweep")
    assert sorted(table["cfg.seed"]) == [1, 2] and set(table["status"]) <= {"max_steps", "converged"}
    for s in summaries:
        run = cotresnet.load_run(s["run_dir"])
        assert run.final.risk(run.data.x_train, run.data.y_train).item() == s["final"]["risk_train"]
    # the job's directory holds its replicas: cotresnet-status and cotresnet-plot say so, not "killed"
    from cotresnet.report.cli import plot_main
    from cotresnet.report.status import status_lines

    job = tmp_path / "sweep" / "0_job"
    assert status_lines(job)[0] == "sweep 0_job: 2 runs found, no plan known (sweep_plan.json absent or open-ended)"
    assert status_lines(job)[1].split()[:2] == ["done", "2"]
    assert plot_main([str(job)]) == 2 and plot_main([str(tmp_path / "nowhere")]) == 2


def test_a_job_leaves_the_process_thread_count_as_it_found_it(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cotresnet.run_job(cotresnet.compose_config([*SMALL, "trainer.max_steps=2", "plots=[]"]), tmp_path / "run")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_errors_of_the_api_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="model.L"):
        cotresnet.compose_config(["model.L=abc"])
    with pytest.raises(ConfigError, match="model.L=0"):  # composing checks every value that needs no data
        cotresnet.compose_config(["model.L=0"])
    with pytest.raises(ConfigError, match="data is one of: breast_cancer, diabetes, digits, teacher, wine"):
        cotresnet.compose_config(["data=mnist"])
    with pytest.raises(ConfigError, match="takes a list of overrides"):
        cotresnet.compose_config("model.L=4")
    with pytest.raises(ConfigError, match="takes a composed configuration"):
        cotresnet.run_job({"model": {"L": 3}}, tmp_path / "run")
    cfg = cotresnet.compose_config([*SMALL])
    cfg.model.L = 0  # changed after composing: run_job checks again
    with pytest.raises(ConfigError, match="model.L=0"):
        cotresnet.run_job(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(RunDirError, match="particles.pt: missing"):
        cotresnet.load_run(tmp_path)


def test_an_experiment_keeps_the_group_options_it_does_not_contradict():
    """experiment=... with the default option chosen explicitly, or an option whose own values it leaves alone,
    composes as the experiment says; command-line values win over the experiment's."""
    cfg = cotresnet.compose_config(["experiment=pl_phase_diagram", "data=teacher", "callbacks=default"])
    assert (cfg.data.n_train, cfg.callbacks.kernel_every) == (64, 200)
    cfg = cotresnet.compose_config(["experiment=pl_phase_diagram", "callbacks=none", "callbacks.kernel_every=0",
                                    "callbacks.ot_every=0"])
    assert (cfg.callbacks.kernel_every, cfg.callbacks.ot_every, cfg.model.M) == (0, 0, 32)


def test_a_run_records_the_values_it_trained_with(tmp_path):
    """.hydra/config.yaml holds resolved values: a width tied to the depth (mean_field_limit's
    M = ${mul:2,${model.L},${model.L}}) is a number there, in load_run's config and in the sweep table."""
    from helpers import train_small

    train_small(tmp_path / "run", "model.M='${mul:2,${model.L},${model.L}}'")
    config = cotresnet.load_run(tmp_path / "run").config
    assert config["model"]["M"] == 2 * config["model"]["L"] ** 2
    assert cotresnet.load_sweep(tmp_path)["cfg.model.M"].tolist() == [2 * config["model"]["L"] ** 2]
