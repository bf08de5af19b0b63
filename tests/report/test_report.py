"""The sweep report: every experiment's figures from a small sweep holding a failed and a diverged job,
checked for what can be checked (tick labels in the table's order, scale types, markers, colourbars,
seed counts); and report/diagnose survive malformed jobs, naming the file."""
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cotresnet.report.cli import report, report_metrics
from cotresnet.report.figures import build_figures
from cotresnet.report.style import spans_decades
from cotresnet.report.sweep import collect, count_statuses, swept_keys
from cotresnet.rundir import contract as RD
from cotresnet.sweeps.expand import sweep_jobs
from cotresnet.train import CONF_DIR
from helpers import grid_experiments

EXPERIMENTS = grid_experiments()
CATEGORICAL = {"activation": ("model.activation", ["tanh", "silu", "gelu", "relu"]),
               "datasets": ("data", ["diabetes", "digits", "wine", "breast_cancer"])}


def fake_sweep(tmp_path: Path, experiment: str) -> Path:
    """The experiment's jobs with made-up results: job 1 failed, job 2 diverged, the others finished with
    metrics spanning several decades (job k: 10^-k)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    sweep = tmp_path / experiment
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"hydra.sweep.dir={sweep}"],
                      return_hydra_config=True)
        jobs = list(sweep_jobs(cfg))
    for k, (overrides, job_cfg, job_dir) in enumerate(jobs):
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(job_cfg, job_dir / ".hydra" / "config.yaml")
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides]))
        steps = [0, 10, 20]
        rows = [{"step": s, "flow_time": 0.1 * s, "risk_train": 10.0 ** (-k * s / 20)} for s in steps]
        if k == 1:
            RD.write_summary(job_dir, {"status": "failed", "error": "RuntimeError: boom"})
            continue
        writer = RD.CSVWriter(job_dir / RD.METRICS, RD.COLUMNS)
        for r in rows:
            writer.append(r)
        value = 1e30 if k == 2 else 10.0 ** (-k)
        final = {m: value for m in RD.COLUMNS if m not in ("step", "flow_time")}
        RD.write_summary(job_dir, {"status": "diverged" if k == 2 else "max_steps", "steps": 20, "flow_time": 2.0,
                                   "final": {**final, "risk_train": 10.0 ** (-k) if k != 2 else 1e30, "step": 20},
                                   "risk_init": 1.0, "min_pl_ratio": value, "diverged_at": 20 if k == 2 else None,
                                   "lambda_min_feature_layers": {"init": [value, 2 * value]},
                                   "certificate": {"resolved": True, "lambda_min_tangent_init": value, "kind": "full"}})
    return sweep


# cot_vs_wasserstein sweeps 16 jobs, each with its own figures: ~16 s, in the full suite
@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.slow) if e == "cot_vs_wasserstein" else e
                                        for e in EXPERIMENTS])
def test_every_experiment_draws_readable_figures(tmp_path, experiment):
    sweep = fake_sweep(tmp_path, experiment)
    r = report(sweep)
    assert {p.suffix for p in r["figures"]} == {".png", ".pdf"} and all(p.stat().st_size > 1000 for p in r["figures"])
    df, keys = collect(sweep), swept_keys(sweep)
    read = lambda p, name: RD.read_table(Path(p), name) if (Path(p) / name).exists() else None
    figs = build_figures(df, keys, report_metrics(sweep), read)
    assert figs and any(n.startswith("heatmap_") for n in figs) == (len([k for k in keys if k != "seed"]) >= 2)
    params = yaml.safe_load((Path(CONF_DIR) / "experiment" / f"{experiment}.yaml").read_text())["hydra"]["sweeper"]
    n_seeds = len(str((params.get("params") or {}).get("seed", "0")).split(","))
    for name, fig in figs.items():
        ax = fig.axes[0]
        labels = " ".join(label for a in fig.axes for label in a.get_legend_handles_labels()[1])
        assert "failed" in labels and "diverged" in labels, (name, labels)  # marked on every figure
        if name.startswith("geometry_"):
            continue  # one panel per geometry, drawn from the jobs' own tables
        if name.startswith("risk_curves"):
            assert ax.get_yscale() == "log" and ax.get_ylim()[1] < 1e29  # the diverged curve is outside the scale
            continue
        note = "1 seed" if n_seeds == 1 else f"mean over {n_seeds} seeds"
        assert note in ax.get_title(), (name, ax.get_title())
        metric = next(m for m in report_metrics(sweep) if name.startswith((f"heatmap_{m}_", f"{m}_vs_")))
        spans = spans_decades(df[df["status"] == "max_steps"][metric].astype(float), 2)
        if name.startswith("heatmap_"):
            assert len(fig.axes) == 2 and fig.axes[1].get_ylabel()  # a colourbar with its label
            assert type(ax.images[0].norm).__name__ == ("LogNorm" if spans else "Normalize"), name
            assert ax.images[0].norm.vmax < 1e29  # the diverged job's 1e30 is not on the scale
        else:
            assert ax.get_yscale() == ("log" if spans else "linear"), name
            assert ax.get_ylim()[1] < 1e29 and ax.get_ylabel()
        if experiment in CATEGORICAL:
            key, order = CATEGORICAL[experiment]
            if name.endswith(f"_vs_{key}"):
                assert [t.get_text() for t in ax.get_xticklabels()] == order and ax.get_xlabel() == key
    import matplotlib.pyplot as plt

    plt.close("all")


def test_experiments_name_their_metrics(tmp_path):
    assert "lambda_min_feature_init" in report_metrics(fake_sweep(tmp_path, "kernel_vs_width"))


def test_report_counts_and_names_killed_and_corrupt_jobs(tmp_path, capsys):
    sweep = fake_sweep(tmp_path, "pl_phase_diagram")
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    (jobs[3] / "summary.json").unlink()  # killed: no summary
    (jobs[4] / "summary.json").write_text('{"status": "max_st')  # torn by a non-atomic writer
    (jobs[5] / "summary.json").write_text('{"status": "max_steps", "final": {"risk_train": "low"}, "steps": 3, "flow_time": 1}')
    (jobs[6] / ".hydra" / "config.yaml").write_text("model: [unclosed")
    (jobs[7] / "metrics.csv").write_text("step,flow_time,risk_train\nabc,def,ghi\n")
    (jobs[8] / "metrics.csv").write_text("step,flow_time,risk_train\n0,0,1\n10,1,0.5\n")  # cut after step 10
    df = collect(sweep)
    status = dict(zip(df["job"], df["status"]))
    assert status[jobs[3].name] == "incomplete" and status[jobs[4].name] == "corrupt"
    assert status[jobs[5].name] == "corrupt" and status[jobs[6].name] == "corrupt"
    assert status[jobs[7].name] == status[jobs[8].name] == "corrupt"
    errors = dict(zip(df["job"], df["error"]))
    assert "summary.json" in errors[jobs[4].name] and "config.yaml" in errors[jobs[6].name]
    assert "metrics.csv: its last row is step 10, the run finished at step 20" in errors[jobs[8].name]
    line = count_statuses(sweep)
    assert line.startswith(f"sweep {sweep.name}: 9 runs:") and jobs[3].name in line and jobs[4].name in line
    assert f"[corrupt: {jobs[4].name}" in line
    from cotresnet.report.cli import main

    assert main([str(sweep)]) == 0 and "9 runs" in capsys.readouterr().out


def test_diagnose_without_summary_uses_the_run_s_own_kernel_samples(tmp_path, capsys):
    from cotresnet.report.diagnose import main
    from helpers import train_small

    _, run = train_small(tmp_path / "run", "data.n_train=160", "trainer.max_steps=2")
    (run / "summary.json").unlink()
    assert main([str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["certificate"]["n"] == 160  # the whole set, as the run had
    (run / ".hydra" / "config.yaml").unlink()
    assert main([str(run), "--json"]) == 0  # the schema's default rule: 2048 / d_out rows
    assert json.loads(capsys.readouterr().out)["certificate"]["n"] == 160


def test_diagnose_names_the_bad_file_and_range_checks_n_probe(tmp_path, run_small, capsys):
    from cotresnet.report.diagnose import main

    _, run = run_small("trainer.max_steps=3")
    assert main([str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["certificate"]["kind"] == "full" and out["final"]["risk_train"] > 0
    for n in ("0", "-3", "25"):
        assert main([str(run), "--n-probe", n]) == 2
        assert "--n-probe" in capsys.readouterr().err
    assert main([str(run), "--n-probe", "12"]) == 0 and "probe certificate" in capsys.readouterr().out
    (run / "summary.json").write_text("[1, 2]")
    assert main([str(run)]) == 2 and "summary.json" in capsys.readouterr().err
    (run / "summary.json").unlink()
    (run / "data.pt").write_bytes(b"garbage")
    assert main([str(run)]) == 2 and "data.pt" in capsys.readouterr().err
    (run / "particles.pt").unlink()
    assert main([str(run)]) == 2 and "particles.pt: missing" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere")]) == 2
