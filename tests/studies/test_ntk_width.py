"""ntk_width (Nguyen, Mondelli, Montufar): the exact infinite-width kernel against Monte Carlo and a wide network's
tangent kernel, and the half-width on planted curves."""
import math

import numpy as np
import pytest
import torch

from cotresnet.diagnostics.kernels import tangent_kernel
from cotresnet.studies import ntk_width as NW
from cotresnet.studies.cli import REPRODUCE
from cotresnet.studies.common import config_networks, replica_list


def test_limit_kernel_equals_its_expectation_by_monte_carlo():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, generator=g, dtype=torch.float64)
    S, d = 400_000, 8
    w = torch.randn(S, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    b = torch.randn(S, generator=g, dtype=torch.float64)
    u = torch.randn(S, generator=g, dtype=torch.float64)
    z = x @ w.T + b
    mc = (torch.relu(z) @ torch.relu(z).T + ((z > 0) * u).double() @ ((z > 0) * u).double().T * (x @ x.T + 1)) / S
    torch.testing.assert_close(NW.relu_limit_kernel(x, d), mc, rtol=0.02, atol=0.02)


def test_a_wide_networks_tangent_kernel_approaches_the_limit():
    nets, data = config_networks([*NW.DATA, "data.n_train=6", "model.M=4096"], replica_list(seed=[0]))
    x = nets[0].embed(data.x_train)
    K, K_inf = tangent_kernel(nets[0], data.x_train), NW.relu_limit_kernel(x, 8)
    assert float((K - K_inf).norm() / K_inf.norm()) < 0.05


def test_half_width_interpolates_the_last_crossing():
    widths = [4, 8, 16, 32]
    assert NW.half_width(widths, [0.1, 0.3, 0.7, 0.9]) == pytest.approx(math.exp(np.interp(0.5, [0.3, 0.7],
                                                                                            np.log([8, 16]))))
    assert NW.half_width(widths, [0.6, 0.2, 0.7, 0.9]) == pytest.approx(math.exp(np.interp(0.5, [0.2, 0.7],
                                                                                           np.log([8, 16]))))
    assert math.isnan(NW.half_width(widths, [0.6, 0.7, 0.8, 0.9]))
    assert NW.half_width(widths, [0.1, 0.2, 0.3, 0.4]) == math.inf


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(REPRODUCE, "ntk_lambda_min")
    assert "exponent alpha of M_half in N" in line
