"""The sweep report: every experiment's figures from a small sweep holding a failed and a diverged job,
checked for what can be checked (tick labels in the table's order, scale types, markers, colourbars,
seed counts); and report/diagnose survive malformed jobs, naming the file."""
import json
from pathlib import Path

import pytest
from fake_sweeps import fake_sweep

from cotresnet.report.cli import report, report_metrics, report_settings
from cotresnet.report.figures import build_figures
from cotresnet.report.style import spans_decades
from cotresnet.report.sweep import collect, count_statuses, swept_keys
from cotresnet.rundir import contract as RD
from helpers import grid_experiments

EXPERIMENTS = grid_experiments()
CATEGORICAL = {"activation": ("model.activation", ["tanh", "silu", "gelu", "relu"]),
               "datasets": ("data", ["diabetes", "digits", "wine", "breast_cancer"])}


# cot_vs_wasserstein sweeps 16 jobs, each with its own figures: ~16 s, in the full suite
@pytest.mark.parametrize("experiment", [pytest.param(e, marks=pytest.mark.slow) if e == "cot_vs_wasserstein" else e
                                        for e in EXPERIMENTS])
def test_every_experiment_draws_readable_figures(tmp_path, experiment):
    """A page per kind (metrics, heatmaps with two keys, risk curves, geometry), a panel per computed metric,
    every axis labelled in symbols, the swept values as ticks, scales from the values, unfinished runs marked."""
    from cotresnet.report.style import LABELS

    sweep = fake_sweep(tmp_path, experiment)
    r = report(sweep)
    assert {p.suffix for p in r["figures"]} == {".png"} and all(p.stat().st_size > 1000 for p in r["figures"])
    assert r["html"].is_file()
    df, keys = collect(sweep), swept_keys(sweep)
    read = lambda p, name: RD.read_table(Path(p), name) if (Path(p) / name).exists() else None  # noqa: E731
    settings = report_settings(sweep)
    figs, warnings = build_figures(df, keys, settings["metrics"], read, settings["x"])
    grid_keys = [k for k in keys if k != "seed"]
    assert set(figs) >= {"metrics", "risk_curves"} and ("heatmaps" in figs) == (len(grid_keys) >= 2)
    assert ("geometry" in figs) == ("optim.geometry" in keys) and not warnings
    panels = [ax for ax in figs["metrics"].axes if ax.get_visible()]
    assert len(panels) == len(settings["metrics"])
    for ax, metric in zip(panels, settings["metrics"]):
        x_label = ax.get_xlabel().split(" (and ")[0]  # a size tied to the swept key is named after it
        assert ax.get_ylabel().startswith(LABELS[metric]) and x_label in LABELS.values(), (metric, ax.get_ylabel())
        finished = df[df["status"] == "max_steps"][metric].astype(float)
        assert ax.get_yscale() == ("log" if spans_decades(finished, 2) else "linear"), metric
        assert ax.get_ylim()[1] < 1e29  # the diverged run's 1e30 is not on the scale
        primary = settings["x"] or max(grid_keys, key=lambda k: (df[f"sweep.{k}"].map(
            lambda v: isinstance(v, (int, float))).all(), df[f"sweep.{k}"].nunique()))
        if primary in dict(CATEGORICAL.values()):
            assert [t.get_text() for t in ax.get_xticklabels()] == dict(CATEGORICAL.values())[primary]
        elif not settings["x"]:
            ticks = sorted(df[f"sweep.{primary}"].dropna().unique())
            assert [t.get_text().split("\n")[0] for t in ax.get_xticklabels()] == [f"{v:g}" for v in ticks]
    for name, fig in figs.items():
        texts = " ".join(t for a in fig.axes for t in a.get_legend_handles_labels()[1])
        texts += " ".join(t.get_text() for lg in fig.legends for t in lg.get_texts())
        assert "failed" in texts and "diverged" in texts, (name, texts)  # marked on every page
    heat = figs.get("heatmaps")
    if heat is not None:
        bars = [a for a in heat.axes if a.get_ylabel() and not a.get_xlabel()]  # the colourbars, labelled
        assert len(bars) == len(settings["metrics"])
        for ax in heat.axes:
            if ax.images:
                assert ax.images[0].norm.vmax < 1e29
    ax = figs["risk_curves"].axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylim()[1] < 1e29 and ax.get_xlabel() == LABELS["flow_time"]


def test_a_metric_nobody_computed_gets_a_warning_not_a_panel(tmp_path):
    sweep = fake_sweep(tmp_path, "pl_phase_diagram")
    df, keys = collect(sweep), swept_keys(sweep)
    df["depth_w2_uniform"] = None  # a layered network: no depths measured
    figs, warnings = build_figures(df, keys, ["log10_risk_ratio", "depth_w2_uniform"], lambda *a: None)
    assert warnings == ["depth_w2_uniform: computed in no finished run, not drawn"]
    assert len([a for a in figs["metrics"].axes if a.get_visible()]) == 1


def test_a_report_warns_of_grown_risk_and_leaves_no_stale_page(tmp_path):
    """A finished run whose risk ended above its start is named (finite, so not diverged); a page an earlier
    report drew and this one does not is removed, whatever its format."""
    sweep = fake_sweep(tmp_path, "activation")
    job = sorted(p for p in sweep.iterdir() if p.name.startswith("3_"))[0]
    summary = RD.read_summary(job)
    summary["final"]["risk_train"] = 5e4
    RD.write_summary(job, summary)
    out = sweep / RD.REPORT
    out.mkdir()
    (out / "threshold_fractions.pdf").write_bytes(b"%PDF old")
    r = report(sweep)
    assert not (out / "threshold_fractions.pdf").exists() and (out / "metrics.png").is_file()
    grown = [w for w in r["warnings"] if "above their initial risk" in w]
    assert len(grown) == 1 and job.name in grown[0] and "x5e+04" in grown[0]


def test_the_console_prints_every_warning_the_page_lists(tmp_path, capsys):
    """One list of warnings (report.cli.run_warnings and the figures'): the failed and diverged runs of the fake
    sweep, the grown risk, the runs outside the theorem are on the console as on report.html."""
    import html
    import re

    from cotresnet.report.cli import main

    sweep = fake_sweep(tmp_path, "activation")
    assert main([str(sweep)]) == 0
    printed = [line[len("warning: "):] for line in capsys.readouterr().out.splitlines() if line.startswith("warning: ")]
    page = (sweep / RD.REPORT / "report.html").read_text()
    listed = [html.unescape(w) for w in re.findall(r"<li>(.*?)</li>", page.split("<h2>Warnings</h2>")[1].split("</ul>")[0])]
    assert printed == listed and any("failed" in w for w in listed) and any("diverged" in w for w in listed)


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


def test_an_unknown_metric_is_refused_and_the_report_kept(tmp_path, capsys):
    from cotresnet.report.cli import main

    sweep = fake_sweep(tmp_path, "activation")
    assert main([str(sweep)]) == 0
    pages = {p.name: p.read_bytes() for p in (sweep / RD.REPORT).iterdir()}
    assert main([str(sweep), "--metric", "min_pl_ratio", "--metric", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--metric bogus: not a column" in err and "min_pl_ratio" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (sweep / RD.REPORT).iterdir()} == pages


def test_a_run_directory_is_not_reported_as_a_sweep(tmp_path, capsys):
    """cotresnet-report on one run refuses (one line naming cotresnet-plot) and writes nothing into the run."""
    from cotresnet.report.cli import main

    run = sorted(p for p in fake_sweep(tmp_path, "activation").iterdir() if (p / RD.SUMMARY).is_file())[0]
    before = sorted(p.name for p in run.iterdir())
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "is a run directory, not a sweep" in err and "cotresnet-plot" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before
    elsewhere = tmp_path / "not_a_sweep"
    (elsewhere / "notes").mkdir(parents=True)
    assert main([str(elsewhere)]) == 2 and "no runs found" in capsys.readouterr().err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["notes"]


def test_a_size_tied_to_the_swept_key_is_named_under_its_ticks(tmp_path):
    """mean_field_limit sweeps L with M = 2L² following it: the axis says M's values too; kernel_vs_width's M
    axis names no tied size (L and N stay fixed)."""
    import matplotlib.pyplot as plt

    from cotresnet.report.panels import key_axis

    fig, ax = plt.subplots()
    axis = key_axis(collect(fake_sweep(tmp_path, "mean_field_limit")), "model.L")
    assert axis.tied == ("model.M", {4: 32, 8: 128, 16: 512})
    axis.apply(ax)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["4\nM = 32", "8\nM = 128", "16\nM = 512"]
    assert "tied" in ax.get_xlabel()
    assert key_axis(collect(fake_sweep(tmp_path, "kernel_vs_width")), "model.M").tied is None
    plt.close(fig)
