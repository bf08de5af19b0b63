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


def test_the_sweep_monitor_counts_runs_against_the_plan(tmp_path):
    from cotresnet.report.sweep import count_statuses
    from cotresnet.rundir import contract as RD

    sweep = tmp_path / "sweep"
    train_small(sweep / "0_a", "trainer.max_steps=2")
    train_small(sweep / "1_b", "init.scale_u=1e30", "trainer.max_steps=2")
    RD.write_sweep_plan(sweep, "grid", runs=4, jobs=3)
    monitor = SweepMonitor(sweep)
    assert monitor.line() == "sweep sweep: 2/4 runs done (0 failed, 1 diverged), 0 running, ETA ?"
    assert monitor.line() is None  # nothing changed: no new line
    train_small(sweep / "2_c", "trainer.max_steps=2", "sweep.replicas=['seed=1','seed=2']")  # one job, two runs
    assert monitor.line().startswith("sweep sweep: 4/4 runs done (0 failed, 1 diverged), 0 running, ETA 0m00s")
    assert count_statuses(sweep).startswith("sweep sweep: 4 runs in 3 jobs: 3 finished")
    RD.write_sweep_plan(sweep, "threshold", runs=9, jobs=3, bound=True)
    assert monitor.line().startswith("sweep sweep: 4/≤ 9 runs done")
    from cotresnet.rundir.ownership import RunLock

    RD.write_summary(sweep / "0_a", {**RD.read_summary(sweep / "0_a"), "status": "interrupted"})
    with RunLock(sweep / "0_a"):  # an interrupted run resumed, by a job of this process: running, not done
        line = monitor.line()
    assert line.startswith("sweep sweep: 3/≤ 9 runs done") and ", 1 running" in line


def read_pty(master: int, proc, timeout: float = 120) -> bytes:
    """Everything a process wrote to its pseudo-terminal until it exits."""
    import os
    import select
    import time

    out, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # every writer closed: the process is gone
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    return out


def test_a_terminal_sees_a_live_bar_and_train_log_the_progress_lines(tmp_path):
    """Under a pseudo-terminal that never set its size (0 x 0, as script and CI runners leave it), the
    default trainer.progress=auto draws a live bar on the terminal, and train.log still gets the lines."""
    import os
    import pty
    import subprocess

    from helpers import TRAIN, job_env

    master, slave = pty.openpty()
    proc = subprocess.Popen(TRAIN + ["debug=fast", "trainer.max_steps=200", f"hydra.run.dir={tmp_path / 'run'}"],
                            stdin=slave, stdout=slave, stderr=slave, env=job_env(), close_fds=True)
    os.close(slave)
    try:
        out = read_pty(master, proc).decode(errors="replace")
    finally:
        os.close(master)
    assert proc.returncode == 0, out[-2000:]
    frames = [f for f in out.split("\r") if "step/s" in f]
    assert len(frames) >= 2 and "200/200" in frames[-1] and "risk" in frames[-1], out[-2000:]
    assert "step 200/200" in (tmp_path / "run" / "train.log").read_text()


def test_the_eta_comes_from_the_recent_rate_not_the_first_step():
    from cotresnet.job.progress import MovingRate

    rate = MovingRate(half_life_s=1.0)
    assert rate.eta(100) == "?"
    rate.update(1, 60.0)  # the first step ends after a minute of start-up
    for step in range(2, 42):  # then 10 steps/s, then 5 steps/s
        rate.update(step, 60.0 + 0.1 * (step - 1))
    assert abs(rate.rate - 10) < 1e-6 and rate.eta(100) == "0m10s"
    for step in range(42, 82):
        rate.update(step, 64.0 + 0.2 * (step - 41))
    assert 5 <= rate.rate < 5.1  # the old rate forgotten after a few half-lives
