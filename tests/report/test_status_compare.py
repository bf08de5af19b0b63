"""cotresnet-status (what a sweep is doing, from its directory) and cotresnet-compare (two runs side by side)."""
import shutil
import subprocess
import sys

import pytest

from cotresnet.report.compare import main as compare_main
from cotresnet.report.status import main as status_main
from cotresnet.report.status import status_lines
from cotresnet.rundir import contract as RD
from helpers import train_small

HOLD = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.lockf(fd, fcntl.LOCK_EX); " \
       "print('held', flush=True); time.sleep(120)"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a, _ = train_small(root / "a", "trainer.max_steps=6", "callbacks.kernel_every=3")
    b, _ = train_small(root / "b", "trainer.max_steps=6", "callbacks.kernel_every=3", "init.scale_u=2")
    return root / "a", root / "b"


def test_status_says_what_is_done_running_failed_stopped_and_planned(tmp_path, two_runs):
    sweep = tmp_path / "sweep"
    for name in ("0_done", "1_failed", "2_stopped", "3_running"):
        shutil.copytree(two_runs[0], sweep / name)
    RD.write_summary(sweep / "1_failed", {"status": "failed", "error": "ValueError: x"})
    (sweep / "2_stopped" / RD.SUMMARY).unlink()  # killed: no summary, and nobody holds its lock
    (sweep / "3_running" / RD.SUMMARY).unlink()
    RD.write_sweep_plan(sweep, "grid", runs=6, jobs=6)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep / "3_running" / RD.LOCK)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lines = status_lines(sweep)
    finally:
        holder.kill()
        holder.wait()
    assert lines[0] == "sweep sweep (grid sweeper): 4 runs found, 6 planned"
    text = "\n".join(lines)
    for group, count, name in (("done", 1, ""), ("running", 1, "3_running"), ("failed", 1, "1_failed"),
                               ("stopped", 1, "2_stopped"), ("planned", 2, "not started")):
        (line,) = [x for x in lines if x.split()[0] == group]
        assert int(line.split()[1]) == count and name in line, text
    assert status_main([str(sweep), str(two_runs[0])]) == 0
    assert status_lines(two_runs[0]) == ["run a: max_steps after 6 steps (t = 0.6)"]


def test_status_of_a_threshold_search_says_its_plan_is_a_bound(tmp_path):
    RD.write_sweep_plan(tmp_path, "threshold", runs=12, jobs=4, bound=True)
    lines = status_lines(tmp_path)
    assert "at most 12 planned if its brackets hold" in lines[0] and lines[-1].split()[:2] == ["planned", "12"]


def test_compare_puts_configurations_summaries_and_curves_side_by_side(tmp_path, two_runs, capsys):
    a, b = two_runs
    assert compare_main([str(a), str(b), "--out", str(tmp_path / "cmp.pdf")]) == 0
    out = capsys.readouterr().out.splitlines()
    (diff,) = [x for x in out if x.startswith("init.scale_u")]
    assert diff.split()[1:] == ["1.0", "2.0"] or diff.split()[1:] == ["1", "2"]
    sa, sb = RD.read_summary(a), RD.read_summary(b)
    (risk,) = [x for x in out if x.startswith("final training risk")]
    ratio = sb["final"]["risk_train"] / sa["final"]["risk_train"]
    assert abs(float(risk.split()[-1]) / ratio - 1) < 1e-3
    assert (tmp_path / "cmp.pdf").read_bytes().startswith(b"%PDF")
    assert compare_main([str(a), str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert compare_main([str(a), str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert compare_main([str(a), str(b), "--out", str(tmp_path / "x.pdf"), "--format", "png"]) == 2
    assert "--format asks for png" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_compare_draws_a_diverged_run_within_the_other_runs_time(tmp_path, two_runs, monkeypatch):
    """A blow-up (dt 1e6) does not set the axes: both runs are drawn up to the finished run's last time, the
    legend names the diverged run as drawn that far, and every log axis shows at least two ticks."""
    import matplotlib.pyplot as plt

    from cotresnet.report import compare

    diverged, _ = train_small(tmp_path / "diverged", "trainer.max_steps=6", "optim.dt=1e6")
    assert RD.read_summary(tmp_path / "diverged")["status"] == "diverged"
    figures = []
    monkeypatch.setattr(compare, "save_figure", lambda fig, *a, **k: figures.append(fig) or [])
    compare.compare_figure(two_runs[0], tmp_path / "diverged", tmp_path / "cmp")
    (fig,) = figures
    last = float(RD.read_table(two_runs[0])["flow_time"].max())
    risk = fig.axes[0]
    assert max(x for line in risk.lines for x in line.get_xdata()) == pytest.approx(last)
    assert max(y for line in risk.lines for y in line.get_ydata()) < 1  # not the blow-up to 1e30
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("B: diverged") and f"drawn to t = {last:.3g}" in t for t in legend), legend
    for ax in fig.axes:
        assert ax.get_xlim()[1] == pytest.approx(1.03 * last)  # one time axis, whatever each panel measured
        if ax.get_yscale() == "log":
            lo, hi = sorted(ax.get_ylim())
            assert sum(lo <= t <= hi for t in ax.get_yticks()) >= 2, ax.get_title()
    plt.close(fig)


def test_compare_names_two_runs_of_the_same_name_by_their_paths(tmp_path, two_runs, monkeypatch):
    """Replicas share their directory's name (seed=0 in two jobs): the runs are named by their paths below the
    directory they share, in the table and in the figure's file name."""
    import shutil

    from cotresnet.report.compare import comparison_lines, run_names

    a, b = tmp_path / "0_x" / "seed=0", tmp_path / "1_y" / "seed=0"
    shutil.copytree(two_runs[0], a)
    shutil.copytree(two_runs[1], b)
    assert run_names(a, b) == ("0_x/seed=0", "1_y/seed=0")
    assert comparison_lines(a, b)[0].split()[:4] == ["A:", "0_x/seed=0", "B:", "1_y/seed=0"]
    # long job names: the legend names the runs by what differs (init.scale_u here), not by elided paths
    import matplotlib.pyplot as plt

    from cotresnet.report import compare

    long_a, long_b = tmp_path / ("0_" + "k" * 40) / "seed=0", tmp_path / ("1_" + "k" * 40) / "seed=0"
    shutil.copytree(two_runs[0], long_a)
    shutil.copytree(two_runs[1], long_b)
    figures = []
    monkeypatch.setattr(compare, "save_figure", lambda fig, *a, **k: figures.append(fig) or [])
    compare.compare_figure(long_a, long_b, tmp_path / "cmp")
    legend = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert legend[0].startswith("A: init.scale_u=1") and legend[1].startswith("B: init.scale_u=2"), legend
    plt.close(figures[0])
