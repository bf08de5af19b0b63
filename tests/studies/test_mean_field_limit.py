"""mean_field_limit: gaps between successive sizes and the rate on planted curves converging like 1/L."""
import numpy as np
import pytest

from cotresnet.studies import mean_field_limit as MF
from cotresnet.studies.cli import STUDIES


def test_gaps_and_rate_recover_a_planted_first_order_limit():
    rng = np.random.default_rng(0)
    Ls = np.array([2, 4, 8, 16, 32])
    t = np.linspace(0, 5, 11)
    limit = np.exp(-t)
    # seeds: the limit + 1/L t e^-t + small independent noise per seed and size
    risk = np.array([[limit + t * np.exp(-t) / L + rng.normal(0, 1e-5, len(t)) for L in Ls] for _ in range(20)])
    gaps = MF.gaps(risk)
    np.testing.assert_allclose(gaps, np.exp(-1) * (1 / Ls[:-1] - 1 / Ls[1:]), rtol=0.02)
    iv = MF.rate(Ls, risk, draws=200)
    assert iv.contains(-1.0) or abs(iv.value + 1.0) < 0.02


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(STUDIES, "mean_field_limit")
    assert "rate p of Delta(L)" in line
