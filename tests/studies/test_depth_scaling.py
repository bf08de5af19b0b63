"""depth_scaling (Marion et al.): the boundary fit recovers a planted critical beta, and the ratio is the model's."""
import numpy as np
import pytest
import torch

from cotresnet.model import MeanFieldResNet, NetworkSpec, init_particles
from cotresnet.studies import depth_scaling as DS
from cotresnet.studies.cli import REPRODUCE


def test_critical_beta_recovers_a_planted_boundary():
    rng = np.random.default_rng(0)
    L = np.array([16, 32, 64, 128, 256])
    betas = [0.6, 0.7, 0.8, 0.9, 1.0]
    planted = 0.8  # ratio ~ L^(0.8 - beta)
    ratios = np.array([[0.3 * L ** (planted - b) * np.exp(rng.normal(0, 0.05, len(L))) for b in betas]
                       for _ in range(20)])
    assert DS.critical_beta(L, betas, ratios) == pytest.approx(planted, abs=0.01)
    np.testing.assert_allclose(DS.exponents(L, ratios), [planted - b for b in betas], atol=0.03)


@pytest.mark.parametrize("scheme", ["iid", "shared"])
def test_ratio_is_the_mean_field_resnets_with_scale_u_L_to_one_minus_beta(scheme):
    L, M, d, beta = 12, 5, 8, 0.7
    h0 = DS.inputs(6, d)
    got = DS.hidden_state_difference(h0, L, M, [beta], scheme, seed=3)
    p = init_particles(L, M, d, scheme=scheme, scale_u=L ** (1 - beta), seed=3, dtype=torch.float64)
    net = MeanFieldResNet(p, NetworkSpec(L=L, M=M, d=d, d_in=d, d_out=d, dtype="float64", backprop="autograd"),
                          torch.eye(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))
    hL = net(h0).detach()
    expected = ((hL - h0).norm(dim=1) / h0.norm(dim=1)).mean()
    assert got[0] == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["depth_scaling_iid", "depth_scaling_shared"])
def test_quick_entry_end_to_end(quick_entry, name):
    saved, line = quick_entry(REPRODUCE, name)
    assert "critical beta" in line and len(saved["sizes"]["betas"]) == 3
