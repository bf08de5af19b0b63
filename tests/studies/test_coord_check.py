"""coord_check: states and adjoints against the model's own forward and autograd, and the exponents on planted
sizes."""
import numpy as np
import pandas as pd
import pytest
import torch

from cotresnet.studies import coord_check as CC
from cotresnet.studies.cli import STUDIES
from helpers import data, make_net


def test_states_and_adjoints_are_the_models():
    net = make_net(L=4, M=5, d=3, d_in=3, d_out=2)
    x, y = data(N=7, d_in=3)
    X, P = CC.states_and_adjoints(net, x, y)
    torch.testing.assert_close(X, net.states(net.embed(x)).detach(), rtol=1e-12, atol=1e-13)
    xg = x.clone().requires_grad_(True)  # embedding pad with d = d_in: E = I, so dRisk/dx_0 = dRisk/dx
    (grad,) = torch.autograd.grad(net.risk(xg, y), xg)
    torch.testing.assert_close(P[0], grad * x.shape[0], rtol=1e-11, atol=1e-13)


def test_exponents_on_planted_sizes():
    L, M = np.meshgrid([2, 8, 32], [16, 64, 256])
    rows = []
    for param, k in (("mean_field", 0.0), ("standard", -1.0)):
        for l_, m_ in zip(L.ravel(), M.ravel()):
            rows.append(dict(parameterization=param, L=l_, M=m_, activation=1.0, adjoint=1.0,
                             activation_change=(l_ * m_) ** k * 1.01, particle_velocity=(l_ * m_) ** k * 0.99))
    table = pd.DataFrame(rows)
    table.loc[0, "adjoint"] = 1.0 + 1e-9  # keep the fit's residual variance finite
    mf, std = CC.exponents(table, "mean_field"), CC.exponents(table, "standard")
    assert mf["activation_change"][0].within(-CC.FLAT, CC.FLAT)
    assert std["particle_velocity"][1].value == pytest.approx(-1.0)


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(STUDIES, "coord_check")
    assert "widest COT exponent" in line and "standard:" in saved["answer"]
