"""The sweep report's page, report.html: self-contained, and drawn by a real browser (Debian's chromium,
headless) offline with every figure shown and no console error."""
import re
import shutil
import subprocess

import pytest
from fake_sweeps import fake_sweep

from cotresnet.report.cli import report


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    sweep = fake_sweep(tmp_path_factory.mktemp("html"), "pl_phase_diagram")
    r = report(sweep)
    return r, r["html"].read_text()


def test_the_page_holds_everything_a_reader_needs(page):
    r, text = page
    pngs = [p for p in r["figures"] if p.suffix == ".png"]
    assert len(pngs) == text.count('src="data:image/png;base64,') >= 3  # every figure, embedded
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from anywhere
    for name in ("model.M", "init.scale_u", "Warnings", "failed", "diverged", "report.csv", "<th>theorem</th>",
                 "cotresnet-plot RUN_DIR", 'class=scroll'):
        assert name in text, name
    for job in r["table"]["job"]:  # a row and a link per run
        assert f'href="../{job}/" title="{job}">{job.split("_")[0]}</a>' in text


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (make browser-deps)")
def test_a_browser_draws_every_figure_offline_without_console_errors(page, tmp_path):
    r, _ = page
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-proxy-server",
            "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000"]
    out = subprocess.run(args + ["--dump-dom", r["html"].as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", out.stdout).group(1)
    figures, drawn = (int(re.search(rf'data-{k}="(\d+)"', body).group(1)) for k in ("figures", "drawn"))
    assert figures == drawn == len([p for p in r["figures"] if p.suffix == ".png"]), body
    assert "CONSOLE" not in out.stderr or not re.search(r"ERROR:CONSOLE|Uncaught", out.stderr), out.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(args + ["--hide-scrollbars", "--window-size=1280,2000", f"--screenshot={shot}",
                           r["html"].as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20000  # a drawn page, not a blank one
