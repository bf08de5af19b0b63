"""gd_vs_flow: the rows on the common time grid, the successive errors of a planted first-order scheme, and the
order they give."""
import numpy as np
import pandas as pd
import pytest

from cotresnet.studies import gd_vs_flow as GF
from cotresnet.studies import stats as ST
from cotresnet.studies.cli import STUDIES


def test_common_grid_reads_the_rows_at_the_asked_flow_times():
    metrics = pd.DataFrame({"step": np.arange(9), "risk_train": np.arange(9) * 10.0})
    np.testing.assert_allclose(GF.common_grid_risks(metrics, 0.1, [0.4, 0.8]), [40.0, 80.0])


def test_successive_errors_of_a_first_order_scheme_give_order_one():
    t = np.arange(1, 11) * 0.4
    dts = 0.4 / 2.0 ** np.arange(7)
    errors = []
    for c in (0.5, 1.0, 2.0):  # seeds: risk_dt(t) = exp(-t) (1 + c dt t + 0.3 dt^2 t^2), Euler-like
        curves = np.array([np.exp(-t) * (1 + c * dt * t + 0.3 * dt**2 * t**2) for dt in dts])
        errors.append(GF.successive_errors(curves))
    iv = ST.expansion_exponent(dts[:-1], np.array(errors), order=2)
    assert iv.contains(1.0) and iv.hi - iv.lo < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gd_vs_flow", "gd_stability_edge"])
def test_quick_entry_end_to_end(quick_entry, name):
    saved, _ = quick_entry(STUDIES, name)
    assert saved["name"] == name
