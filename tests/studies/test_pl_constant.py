"""pl_constant: per-seed measurements from summaries (unresolved eigenvalues left out) and the exponent fit."""
import math

import numpy as np
import pandas as pd
import pytest

from cotresnet.studies import pl_constant as PL
from cotresnet.studies.cli import STUDIES


def summary(lam, resolved, risk0=1.0, risk=0.01, flow_time=50.0, n=16):
    cert = {"lambda_min_tangent_init": lam, "resolution": 1e-12, "resolved": resolved, "c0": lam / n if resolved else None}
    return {"certificate": cert, "risk_init": risk0, "final": {"risk_train": risk}, "flow_time": flow_time,
            "min_pl_ratio": 0.05, "status": "max_steps"}


def test_measurements_read_the_certificate_and_the_observed_rate():
    rows = PL.measurements([summary(1e-3, True), summary(1e-13, False)], N=16)
    assert rows[0]["c0"] == pytest.approx(1e-3 / 16) and rows[0]["observed_rate"] == pytest.approx(math.log(100) / 50)
    assert math.isnan(rows[1]["c0"]) and math.isnan(rows[1]["lambda_min"])


def test_exponent_recovers_a_planted_power_and_skips_unresolved_values():
    rng = np.random.default_rng(0)
    N = np.repeat([16, 32, 64, 128], 5)
    table = pd.DataFrame({"N": N, "c0": 0.1 * N**-1.0 * np.exp(rng.normal(0, 0.05, len(N)))})
    table.loc[3, "c0"] = math.nan
    fit = PL.exponent(table, "c0")
    assert fit.alpha_lo < -1.0 < fit.alpha_hi and fit.alpha_hi - fit.alpha_lo < 0.1


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(STUDIES, "pl_constant")
    assert "exponent of c_0 in N" in line and "observed rate" in saved["answer"]
