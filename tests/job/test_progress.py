"""What a person watching sees: a job's progress lines (also in train.log), the sweep monitor's line,
the run summary with its certificate."""
from cotresnet.job.progress import print_summary
from cotresnet.report.monitor import SweepMonitor
from helpers import train_small


def test_progress_lines_reach_the_log(tmp_path, capsys):
    summary, run = train_small(tmp_path / "run", "trainer.max_steps=30", "trainer.progress=log")
    log = (run / "train.log").read_text()
    assert "step 30/30" in log and "steps/s" in log and "ETA" in log and "risk" in log
    print_summary(summary)
    out = capsys.readouterr().out
    assert "certificate: lambda_min(K)" in out and "guaranteed factor" in out and f"run directory: {run}" in out


def test_a_probe_or_missing_certificate_is_said_so(capsys):
    base = {"status": "max_steps", "steps": 3, "flow_time": 0.3, "risk_init": 1.0, "min_pl_ratio": 0.1,
            "final": {"risk_train": 0.5}, "run_dir": "x"}
    cert = {"kind": "probe", "n": 128, "n_train": 256, "lambda_min_tangent_init": 1e-20, "resolution": 1e-12,
            "c0": None}
    print_summary({**base, "certificate": cert})
    assert "probe certificate (first 128 of 256 samples): none" in capsys.readouterr().out


def test_the_sweep_monitor_counts_done_failed_and_running_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    train_small(sweep / "0_a", "trainer.max_steps=2")
    train_small(sweep / "1_b", "init.scale_u=1e30", "trainer.max_steps=2")
    monitor = SweepMonitor(sweep, total=4)
    line = monitor.line()
    assert line.startswith("sweep sweep: 2/4 jobs done (0 failed, 1 diverged), 0 running, ETA")
    assert monitor.line() is None  # nothing changed: no new line
