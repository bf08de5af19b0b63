"""transfer: the optimum of planted parabolas and the shifts between sizes, and the dt grids."""
import numpy as np
import pytest

from cotresnet.studies import transfer as TR
from cotresnet.studies.cli import STUDIES


def test_shifts_of_planted_optima():
    x = np.arange(-6, 7) / 2.0
    centres = [0.3, 0.3, 2.3]
    risks = [np.array([(x - c) ** 2 + 0.01 * s for s in range(3)]) for c in centres]
    assert TR.optimum(x, risks[0]) == pytest.approx(0.3)
    np.testing.assert_allclose(TR.shifts([x] * 3, risks[0], risks[1:]), [0.0, 2.0], atol=1e-9)


def test_standard_grid_is_the_mean_field_grid_times_the_base_L_M_and_reaches_16x():
    size = TR.SIZES["default"]
    mf, std = TR.dt_grid(size, "mean_field", 2, 16), TR.dt_grid(size, "standard", 2, 16)
    np.testing.assert_allclose(std[: len(mf)], np.array(mf) * 32)
    assert std[-1] / (mf[-1] * 32) == pytest.approx(16.0)
    assert len(TR.sizes_of(size)) == 5 and TR.sizes_of(size)[2] == (32, 16)


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(STUDIES, "transfer")
    assert "largest |shift|" in line and "init.scale_u" in saved["answer"]
