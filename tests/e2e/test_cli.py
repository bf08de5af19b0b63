"""The command line as a user meets it: refusals, the entry points, the run directory a command leaves."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from cotresnet.model.build import network_from_meta
from helpers import SMALL, TRAIN, cli


@pytest.mark.slow
def test_command_line_refusals_exit_2_with_one_line_and_create_nothing(tmp_path):
    for overrides, field in ([["model.L=0"], "model.L"], [["model.width=3"], "model.width"],
                             [["+model.actvation=silu"], "model.actvation"], [["-m", "model.M=4,0"], "model.M"],
                             [["-m", "model.L=4,abc"], "model.L"], [["-m", "model.M=4,8", "init.scale_u=0.5,x"], "scale_u"],
                             [["-m", "seed=0,1", "sweep.vectorize=[seed]", "hydra/sweeper=basic"], "hydra/sweeper=vectorizing"],
                             [["experiment=pl_phase_diagram", "callbacks=none"], "callbacks.kernel_every=0"],
                             [["model.L=${oc.env:COTRESNET_UNSET}"], "COTRESNET_UNSET"],
                             [["seed=${oc.env:COTRESNET_UNSET,abc}"], "seed"],
                             [["hparams_search=optuna", "optimized_metric=foo"], "optimized_metric"],
                             [["hparams_search=optuna", "optimized_metric=null"], "optimized_metric"],
                             [["hparams_search=optuna", "hydra.sweeper.params.optim.dt=interval(-1,0.5)"], "optim.dt"],
                             [["hparams_search=optuna", "+hydra.sweeper.params.optim.dtt=interval(0.1,0.5)"], "optim.dtt"]):
        out = tmp_path / "out"
        place = [] if overrides[0] == "hparams_search=optuna" else [f"hydra.run.dir={out}"]
        r = cli(TRAIN + [*overrides, *place, f"hydra.sweep.dir={out}"], cwd=tmp_path)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert r.returncode == 2 and field in r.stderr, (overrides, r.stderr[-800:])
        assert lines[0].startswith("cotresnet: invalid configuration:"), r.stderr
        assert len(lines) <= 2 or lines[0].endswith("nothing launched:") and len(lines) == 3, r.stderr  # a line a job
        assert not out.exists() and not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


def test_the_entry_point_and_shell_completion_import_no_torch():
    code = ("import sys; sys.argv = ['cotresnet-train', '-sc', 'query=bash']; from cotresnet.train import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "COMP_LINE": "cotresnet-train model.ac"})
    assert "model.activation=" in out.stdout and out.stdout.strip().endswith("False"), out.stdout + out.stderr


@pytest.mark.slow
def test_console_script_leaves_the_run_directory_and_particles_reproduce_the_risk(tmp_path):
    run = tmp_path / "run"
    exe = Path(sys.executable).parent / "cotresnet-train"
    r = cli([str(exe), f"hydra.run.dir={run}", "trainer.max_steps=60", "callbacks.kernel_every=30",
             "callbacks.ot_every=30", *SMALL], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in [".hydra/config.yaml", "metrics.csv", "summary.json", "particles.pt", "data.pt", "plots/run.png",
                 "identity.json", "spectrum.csv", "checkpoints/last.ckpt"]:
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] in ("max_steps", "converged") and summary["seed"] == 0
    assert {"torch", "lightning", "cotresnet"} <= set(summary["versions"])
    p = torch.load(run / "particles.pt", weights_only=True)
    L, M, d = 3, 8, 8
    assert p["init"]["u"].shape == p["final"]["w"].shape == (L, M, d) and p["final"]["b"].shape == (L, M)
    assert {"activation", "d", "d_in", "d_out", "embedding", "readout", "parameterization"} <= set(p["meta"])
    data = torch.load(run / "data.pt", weights_only=True)
    net = network_from_meta(p["final"], p["meta"])
    risk = net.risk(data["x_train"].float(), data["y_train"].float()).item()
    assert risk == pytest.approx(summary["final"]["risk_train"], rel=1e-6)
    import pandas as pd
    m = pd.read_csv(run / "metrics.csv")
    assert list(m["step"]) == [0, 25, 50, 60]  # every trainer.log_every = 25 steps, then the final particles
    assert (m["flow_time"] == m["step"] * 0.1).all()


@pytest.mark.slow
def test_python_dash_m_and_unique_directories_in_the_same_second(tmp_path):
    runs = []
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: cli(TRAIN + ["trainer.max_steps=2", "callbacks.kernel_every=0",
                                                         "callbacks.ot_every=0", *SMALL], cwd=tmp_path), range(2)))
    for r in results:
        assert r.returncode == 0, r.stderr
        runs.append(r.stdout.split("run directory: ")[1].strip())
    assert len(set(runs)) == 2 and all(Path(x).is_dir() for x in runs)
