"""width_threshold: the thresholds and their scaling on a planted boundary (a fake job: success iff M >= 2 sqrt(N))."""
import math

import pytest

from cotresnet.studies import width_threshold as WT
from cotresnet.studies.cli import REPRODUCE


def test_search_and_fit_recover_a_planted_square_root_law(monkeypatch, tmp_path):
    def fake_job(run_dir, overrides, replicas):
        values = dict(o.split("=", 1) for o in overrides)
        ok = int(values["model.M"]) >= 2 * math.sqrt(int(values["data.n_train"]))
        return [{"status": "converged" if ok else "max_steps"} for _ in replicas]

    monkeypatch.setattr(WT, "run_replicas", fake_job)
    s = WT.search(tmp_path, [16, 64, 256, 1024], range(2), lo=2, hi=128, ratio=1.1)
    est = WT.thresholds(s)
    for n, lo, hi in est[["combination", "lo", "hi"]].itertuples(index=False):
        assert lo < 2 * math.sqrt(float(n)) <= hi  # every seed agrees: the bracket is the interval
    fit = WT.scaling(est)
    assert fit.alpha_lo < 0.5 < fit.alpha_hi and fit.alpha == pytest.approx(0.5, abs=0.05)


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(REPRODUCE, "width_threshold")
    assert "exponent alpha of M* in N" in line and saved["sizes"]["N"] == [8, 16, 32]
