"""Refusals: every bad input is refused before anything is written, with one line naming the field
and what is allowed. In-process (compose + check_job), except where the process boundary is tested."""
import math
import os
from pathlib import Path

import pytest
import torch

from cotresnet.config.compose import compose_config
from cotresnet.errors import ConfigError
from cotresnet.errors import run_check as checked
from cotresnet.job.checks import check_job
from helpers import SMALL, train


def refusal(tmp_path, overrides, multirun=False):
    """The ConfigError message of composing and checking SMALL + overrides in tmp_path/run (None if accepted)."""
    run = tmp_path / "run"
    try:
        check_job(compose_config([*SMALL, *overrides], multirun=multirun), run)
    except ConfigError as e:
        assert not run.exists(), "a refused job created its directory"
        assert "\n" not in str(e), str(e)
        return str(e)
    return None


BAD = [  # (overrides, what the message must name)
    (["model.L=0"], "model.L"), (["model.M=0"], "model.M"), (["model.d=0"], "model.d"), (["model.d=3"], "model.d"),
    (["model.substeps=0"], "model.substeps"), (["model.rtol=0"], "model.rtol"), (["model.atol=nan"], "model.atol"),
    (["model.activation=sigmoid"], "model.activation"), (["model.integrator=heun"], "model.integrator"),
    (["model.backprop=checkpoint"], "model.backprop"), (["model.adjoint=true"], "model.adjoint"),
    (["model.integrator=rk4", "model.backprop=recompute"], "model.backprop"), (["model.embedding=eye"], "model.embedding"),
    (["model.readout=last"], "model.readout"), (["model.dtype=float16"], "model.dtype"),
    (["init.scheme=random"], "init.scheme"), (["init.scale_u=-1"], "init.scale_u"), (["init.scale_w=inf"], "init.scale_w"),
    (["init.scale_b=nan"], "init.scale_b"),
    (["optim.dt=0"], "optim.dt"), (["optim.dt=-1"], "optim.dt"), (["optim.dt=nan"], "optim.dt"), (["optim.dt=inf"], "optim.dt"),
    (["optim.parameterization=ntk"], "optim.parameterization"), (["optim.batch_size=0"], "optim.batch_size"),
    (["optim.batch_size=25"], "optim.batch_size"),
    (["data.name=mnist"], "data.name"), (["data.n_train=0"], "data.n_train"), (["data.n_test=-1"], "data.n_test"),
    (["data.seed=-1"], "data.seed"), (["data.seed=2147483648"], "data.seed"),
    (["data=digits", "data.test_fraction=1.0"], "data.test_fraction"), (["data.test_fraction=-0.1"], "data.test_fraction"),
    (["data.teacher.d=2"], "data.teacher.d"), (["data.teacher.L=0"], "data.teacher.L"),
    (["data.teacher.scale=-2"], "data.teacher.scale"), (["data.teacher.noise=nan"], "data.teacher.noise"),
    (["data.teacher.activation=abs"], "data.teacher.activation"), (["data.teacher.inputs=cube"], "data.teacher.inputs"),
    (["data.name=file", "data.path=/nonexistent/data.pt"], "data.path"), (["data.name=file"], "data.path"),
    (["trainer.flow_time=0"], "trainer.flow_time"), (["trainer.flow_time=nan"], "trainer.flow_time"),
    (["trainer.flow_time=10", "trainer.max_steps=7"], "trainer.flow_time"),
    (["trainer.flow_time=1e12", "optim.dt=1e-3"], "trainer.flow_time"),
    (["trainer.flow_time=10", "sweep.replicas=['optim.dt=0.1','optim.dt=0.2']"], "trainer.flow_time"),
    (["trainer.max_steps=0"], "trainer.max_steps"), (["trainer.log_every=0"], "trainer.log_every"),
    (["trainer.accelerator=tpu"], "trainer.accelerator"), (["trainer.converge_ratio=-1"], "trainer.converge_ratio"),
    (["trainer.converge_ratio=nan"], "trainer.converge_ratio"), (["trainer.matmul_precision=low"], "trainer.matmul_precision"),
    (["trainer.compile=max"], "trainer.compile"), (["trainer.threads=0"], "trainer.threads"),
    (["trainer.progress=fancy"], "trainer.progress"), (["+trainer.extra.max_steps=5"], "trainer.extra.max_steps"),
    (["+trainer.extra.no_such_option=1"], "trainer.extra.no_such_option"),
    (["logger=wandb", "logger.wandb.mode=cloud"], "logger.wandb.mode"),
    (["callbacks.kernel_every=-1"], "callbacks.kernel_every"), (["callbacks.ot_every=-5"], "callbacks.ot_every"),
    (["callbacks.n_probe=0"], "callbacks.n_probe"), (["callbacks.n_probe=100000"], "callbacks.n_probe"),
    (["callbacks.kernel_max_dim=0"], "callbacks.kernel_max_dim"), (["checkpoint_every=-1"], "checkpoint_every"),
    (["callbacks.kernel_memory_mb=8"], "callbacks.kernel_memory_mb"),
    (["optim.dt=1e300"], "optim.dt"), (["model.dtype=float64", "optim.dt=1e308"], "optim.dt"),
    (["trainer.converge_ratio=2"], "trainer.converge_ratio"), (["trainer.converge_ratio=1"], "trainer.converge_ratio"),
    (["model.bandwidth=-1"], "model.bandwidth"), (["~seed"], "seed"),
    (["model.activaton=silu"], "did you mean model.activation"), (["plots=png"], "plots=[png]"),
    (["data=mnist"], "data is one of: breast_cancer, diabetes, digits, teacher, wine"),
    (["experiment=nope"], "experiment is one of: activation, cot_vs_wasserstein,"),
    (["logger=[csv,nope]"], "'logger/nope'; logger is one of: csv, tensorboard, wandb"),
    (["hydra/sweeper=nope"], "hydra/sweeper is one of: basic, optuna, threshold, vectorizing"),
    (["model.L=2,3"], "several values sweep with -m"), (["~model.L"], "set model.L=<value> instead"),
    (["experiment=pl_phase_diagram", "callbacks=none"], "to keep them give callbacks.kernel_every=0 callbacks.ot_every=0"),
    (["experiment=mean_field_limit", "callbacks=none"], "experiment=mean_field_limit sets callbacks.kernel_every=150"),
    (["nope=1"], "the keys are: model, init, data,"), (["model.nope=1"], "the keys of model are: L, M, d,"),
    (["trainer.extra.detect_anomaly=true"], "+trainer.extra.detect_anomaly=<value>"),
    (["model.M=100000000000"], "model.M"), (["data.n_train=1000000000"], "data.n_train"), (["model.d=100000000"], "model.d"),
    (["seed=-1"], "seed"), (["seed=2147483648"], "seed"), (["seed=99999999999999999999"], "seed"),
    (["optimized_metric=accuracy"], "optimized_metric"), (["plots=[gif]"], "plots"),
    (["+model.actvation=silu"], "model.actvation"), (["+foo=1"], "foo"), (["+optim.lr=0.1"], "optim.lr"),
    (["+data.teacher.depth=3"], "data.teacher.depth"), (["+callbacks.every=3"], "callbacks.every"),
    (["sweep.vectorize=[model.M]"], "sweep.vectorize"), (["sweep.replicas=['seed=0','seed=0']"], "sweep.replicas"),
    (["sweep.replicas=['model.M=4']"], "sweep.replicas"), (["sweep.replicas=['seed']"], "sweep.replicas"),
    (["sweep.replicas=['seed=1']", "model.integrator=rk4"], "sweep.vectorize"),
    (["sweep.replicas=['seed=1']", "optim.batch_size=4"], "sweep.vectorize"),
    (["sweep.replicas=['seed=-3']"], "seed"), (["sweep.replicas=['optim.dt=0']"], "optim.dt"),
    (["resume=/nonexistent.ckpt"], "resume="),
    (["optim.geometry=wasserstein"], "model.depth_kernel"), (["optim.geometry=fisher_rao"], "optim.geometry"),
    (["model.depth_kernel=box"], "model.depth_kernel"), (["model.depth_kernel=bump", "model.bandwidth=0"], "model.bandwidth"),
    (["model.depth_kernel=bump", "optim.geometry=wasserstein", "optim.depth_weight=-1"], "optim.depth_weight"),
    (["model.depth_kernel=gaussian", "model.bandwidth=1e6"], "model.bandwidth=1000000.0"),
    (["model.bandwidth=2"], "model.bandwidth=2.0"),
    (["model.integrator=dopri5", "model.rtol=1e-300", "model.atol=1e-300"], "model.rtol"),
    (["model.integrator=dopri5", "model.dtype=float64", "model.rtol=1e-17"], "model.rtol"),
    (["name=../../../x"], "name='../../../x'"), (["name=a/b"], "name='a/b'"), (["name=.."], "name='..'"),
    (["model.depth_kernel=bump", "sweep.replicas=['seed=1']"], "sweep.vectorize"),
    (["model.depth_kernel=bump", "trainer.compile=default"], "trainer.compile"),
    (["model.depth_kernel=bump", "model.backprop=recompute"], "model.backprop"),
    (["model.L=abc"], "model.L"), (["model.width=3"], "model.width"), (["optim.dt=fast"], "optim.dt"),
    (["data=nosuchdata"], "data"), (["model.M=1,2"], "model.M"), (["experiment=nosuch"], "experiment"),
    (["model.L=[1,2]"], "model.L"), (["seed=1.5"], "seed"),
    (["trainer.devices=0"], "trainer.devices"), (["trainer.num_nodes=0"], "trainer.num_nodes"),
    (["trainer.strategy=fsdp"], "trainer.strategy"), (["trainer.particle_parallel=0"], "trainer.particle_parallel"),
    (["trainer.devices=2", "trainer.particle_parallel=3"], "trainer.particle_parallel"),
    (["trainer.particle_parallel=2"], "trainer.particle_parallel"),
    (["model.M=9", "trainer.devices=2", "trainer.particle_parallel=2"], "model.M"),
    (["trainer.devices=2", "model.depth_kernel=bump"], "model.depth_kernel"),
    (["trainer.devices=2", "sweep.replicas=['seed=1']"], "sweep.vectorize"),
    (["trainer.devices=2", "optim.batch_size=4"], "optim.batch_size"),
    (["trainer.devices=2", "trainer.compile=default"], "trainer.compile"),
    (["trainer.devices=2", "model.integrator=dopri5", "model.adjoint=true"], "model.adjoint"),
    (["trainer.devices=2", "data.n_train=1"], "trainer.devices x trainer.num_nodes / trainer.particle_parallel"),
    (["trainer.devices=4096", "trainer.particle_parallel=4096", "model.M=4096"], "trainer.oversubscribe"),
    (["trainer.num_nodes=2"], "trainer.num_nodes=2"),
]


@pytest.mark.parametrize("overrides, field", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_configurations_are_refused_naming_the_field(tmp_path, overrides, field):
    message = refusal(tmp_path, overrides)
    assert message is not None, f"{overrides} was accepted"
    assert field in message, message


def test_gpu_without_cuda_is_refused_before_any_file(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert "trainer.accelerator=gpu" in refusal(tmp_path, ["trainer=gpu"])


def data_file(tmp_path, name, **tensors):
    base = {"x_train": torch.randn(20, 4, dtype=torch.float64), "y_train": torch.randn(20, 2, dtype=torch.float64),
            "x_test": torch.randn(5, 4, dtype=torch.float64), "y_test": torch.randn(5, 2, dtype=torch.float64)}
    path = tmp_path / name
    torch.save({**base, **tensors}, path)
    return path


BAD_DATA = {  # name: (tensors replacing the good ones, words the message must hold)
    "rank1": ({"x_train": torch.randn(20)}, ["x_train", "2-D"]),
    "rank3": ({"y_test": torch.randn(5, 2, 1)}, ["y_test", "2-D"]),
    "rows": ({"y_train": torch.randn(19, 2)}, ["x_train has 20 rows", "y_train has 19"]),
    "test_cols": ({"x_test": torch.randn(5, 3)}, ["test columns"]),
    "bool": ({"x_train": torch.ones(20, 4, dtype=torch.bool)}, ["x_train", "torch.bool"]),
    "complex": ({"y_train": torch.randn(20, 2, dtype=torch.complex64)}, ["y_train", "complex"]),
    "nan": ({"x_train": torch.tensor([[math.nan] * 4] * 20)}, ["x_train", "NaN", "row 0"]),
    "inf": ({"y_test": torch.full((5, 2), math.inf)}, ["y_test", "infinity"]),
    "float32_overflow": ({"x_train": torch.full((20, 4), 1e39, dtype=torch.float64)}, ["x_train", "float32", "float64"]),
    "empty": ({"x_train": torch.randn(0, 4), "y_train": torch.randn(0, 2)}, ["empty training set"]),
    "no_outputs": ({"y_train": torch.randn(20, 0), "y_test": torch.randn(5, 0)}, ["y_train (20, 0)", "one column"]),
    "no_inputs": ({"x_train": torch.randn(20, 0), "x_test": torch.randn(5, 0)}, ["x_train (20, 0)", "one column"]),
    "sparse_coo": ({"x_train": torch.randn(20, 4).to_sparse()}, ["x_train", "dense"]),
    "sparse_csr": ({"y_test": torch.randn(5, 2).to_sparse_csr()}, ["y_test", "dense"]),
    "classification_text": ({"classification": "yes"}, ["'classification'", "bool", "'yes'"]),
    "classification_int": ({"classification": 1}, ["'classification'", "bool"]),
}


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_bad_data_files_are_refused_naming_the_split(tmp_path, name):
    tensors, words = BAD_DATA[name]
    path = data_file(tmp_path, f"{name}.pt", **tensors)
    message = refusal(tmp_path, ["data.name=file", f"data.path={path}"])
    assert message is not None
    for w in words:
        assert w in message, message


def test_foreign_and_unloadable_data_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a tensor file")
    missing_key = tmp_path / "missing.pt"
    torch.save({"x_train": torch.zeros(3, 2)}, missing_key)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], listed)
    for path in (garbage, missing_key, listed):
        assert "data.path" in refusal(tmp_path, ["data.name=file", f"data.path={path}"])
    float32_ok = data_file(tmp_path, "ok.pt", x_train=torch.full((20, 4), 1e39, dtype=torch.float64))
    assert refusal(tmp_path, ["data.name=file", f"data.path={float32_ok}", "model.dtype=float64"]) is None


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_bad_checkpoints_are_refused(tmp_path, small, run_small):
    _, good_run = run_small("trainer.max_steps=4", name="good")
    good = good_run / "checkpoints" / "last.ckpt"
    other_seed = small("seed=7", "trainer.max_steps=4")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": torch.zeros(3)}, foreign)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": Evil(), "cotresnet": {}}, evil)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path, words in ((foreign, ["not a cotresnet checkpoint"]), (evil, ["weights_only"]), (garbage, ["resume="]),
                        (tmp_path / "missing.ckpt", ["not a readable file"])):
        message = refusal(tmp_path, [f"resume={path}"])
        assert message and all(w in message for w in words), message
    with pytest.raises(ConfigError, match="another configuration.*seed: 0 -> 7"):
        check_job(other_seed.copy() if False else small("seed=7", f"resume={good}"), tmp_path / "x")
    assert check_job(small("trainer.max_steps=10", f"resume={good}"), tmp_path / "y").plan.checkpoint == good
    with pytest.raises(ConfigError, match="trainer.max_steps=2 is below the step 4"):
        check_job(small("trainer.max_steps=2", f"resume={good}"), tmp_path / "z")


def test_an_exception_inside_a_check_is_a_bug_report_never_a_warning(capsys):
    def broken():
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as e:
        checked(broken)
    assert e.value.code == 1 and "internal error" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        checked(lambda: (_ for _ in ()).throw(ConfigError("model.L=0 is out of range")))
    assert e.value.code == 2 and "model.L=0" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["garbage", '{"status": "converged"}', '{"status": "done", "steps": 3}', "[1, 2]"])
def test_a_rerun_over_a_malformed_summary_is_refused_naming_it(tmp_path, capsys, text):
    """A run directory reused with a summary.json that is not one (truncated, hand-edited, another tool's): one
    line naming the file, exit 2, the file left as it was."""
    run = tmp_path / "run"
    cfg = compose_config([*SMALL, "trainer.max_steps=2"])
    train(run, *SMALL, "trainer.max_steps=2")
    (run / "summary.json").write_text(text)
    with pytest.raises(SystemExit) as e:
        checked(check_job, cfg, run)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "summary.json" in err and len(err.strip().splitlines()) == 1, err
    assert (run / "summary.json").read_text() == text


def test_an_empty_or_uncreatable_run_directory_is_refused_leaving_nothing(tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from cotresnet.config.compose import CONF_DIR
    from cotresnet.job.checks import check_creatable
    from cotresnet.train import ValidateConfig

    (tmp_path / "file").write_text("")
    for bad in (Path("/proc/cotresnet-test/run"), tmp_path / "file" / "run"):
        with pytest.raises(ConfigError, match="(cannot be created|is not a directory).*paths.root, hydra.run.dir"):
            check_creatable(bad)
    check_creatable(tmp_path / "a" / "b")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # the probe is gone, nothing was made
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra.run.dir="], return_hydra_config=True)
    with pytest.raises(SystemExit) as e:
        ValidateConfig().on_run_start(cfg)
    assert e.value.code == 2 and "hydra.run.dir is empty" in capsys.readouterr().err




@pytest.mark.parametrize("overrides, steps", [(["trainer.flow_time=3", "optim.dt=0.2"], 15),
                                              (["trainer.flow_time=3", "optim.dt=0.2", "trainer.max_steps=15"], 15),
                                              (["trainer.flow_time=0.01", "optim.dt=0.2"], 1),
                                              # standard: a step moves the flow by dt / (L M) = dt / 24
                                              (["trainer.flow_time=1", "optim.dt=2.4",
                                                "optim.parameterization=standard"], 10)])
def test_flow_time_sets_the_step_budget(tmp_path, overrides, steps):
    check = check_job(compose_config([*SMALL, *overrides]), tmp_path / "run")
    assert check.cfg.trainer.max_steps == steps
