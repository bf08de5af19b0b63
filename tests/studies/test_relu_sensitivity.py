"""relu_vs_smooth: perturbations of the planted size, amplification arithmetic, and a smooth flow whose amplification
does not depend on the perturbation's size (Lipschitz) where ReLU's can."""
import numpy as np
import pytest

from cotresnet.studies import relu_sensitivity as RS
from cotresnet.studies.cli import STUDIES
from cotresnet.studies.common import config_networks, flat_particles, replica_list, stacked

TINY = dict(depths=[2], M=4, widths=[4], L=2, eps=[1e-5, 1e-9], seeds=2, n=8, dt=0.1, steps=20)


def test_perturbed_copies_move_every_coordinate_by_eps_times_a_gaussian():
    nets, _ = config_networks(["model.L=2", "model.M=6", "data.n_train=8"], replica_list(seed=[0, 1]))
    out = RS.perturbed(nets, [1e-3, 1e-6], seed=5)
    assert len(out) == 6 and out[0] is nets[0] and out[3] is nets[1]
    theta = flat_particles(stacked(out))
    for base, copies in ((0, (1, 2)), (3, (4, 5))):
        moved = [(theta[c] - theta[base]).pow(2).mean().sqrt().item() for c in copies]
        assert moved[0] == pytest.approx(1e-3, rel=0.3) and moved[1] / moved[0] == pytest.approx(1e-3, rel=1e-6)


def test_amplification_and_size_exponent_on_planted_values():
    d = np.array([[1e-6, 2e-6], [3e-6, 1e-6], [2e-6, 5e-6]])
    np.testing.assert_allclose(RS.amplification(d), [3.0, 2.5])
    L = np.array([2, 4, 8, 16])
    A = 2.0 * L[None, :] ** 0.5 * np.exp(np.random.default_rng(0).normal(0, 0.02, (10, 4)))
    assert RS.size_exponent(L, A).contains(0.5)


def test_smooth_flow_is_lipschitz_in_its_initial_particles():
    worst = {}
    for eps in ([1e-5], [1e-9]):
        worst[eps[0]] = RS.worst_amplification(2, 4, "tanh", {**TINY, "eps": eps}, seeds=2)
    np.testing.assert_allclose(worst[1e-5], worst[1e-9], rtol=1e-3)  # the flow map's derivative: no eps dependence
    assert (worst[1e-9] >= 1.0).all()


@pytest.mark.slow
def test_quick_entry_end_to_end(quick_entry):
    saved, line = quick_entry(STUDIES, "relu_vs_smooth")
    assert "relu/tanh amplification" in line and "tanh in L" in saved["answer"]
