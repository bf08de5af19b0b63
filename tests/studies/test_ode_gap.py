"""ode_gap (Sander et al.): the RK4 reference against the model's own rk4 integrator, the Euler network against the
model, and the exponent fit on a planted Euler error."""
import numpy as np
import pytest
import torch

from cotresnet.model import MeanFieldResNet, NetworkSpec
from cotresnet.studies import ode_gap as OG
from cotresnet.studies.cli import REPRODUCE
from cotresnet.studies.depth_scaling import inputs


def network(a, r, L, **spec):
    d = a["u"].shape[-1]
    p = {k: v[r][None].expand(L, *v.shape[1:]).clone() for k, v in a.items()}
    eye = torch.eye(d, dtype=torch.float64)
    return MeanFieldResNet(p, NetworkSpec(L=L, M=p["u"].shape[1], d=d, d_in=d, d_out=d, dtype="float64", **spec),
                           eye, eye)


def test_ode_reference_agrees_with_the_models_rk4_and_the_resnet_with_the_models_euler():
    a, b = OG.draws([0, 1], M=6, d=8, scale_u=3.0)
    x0 = inputs(5, 8)
    X1 = OG.ode_output(a, b, x0, "shared", steps=256)
    with torch.no_grad():
        model_rk4 = network(a, 1, L=1, integrator="rk4", substeps=256)(x0)
        torch.testing.assert_close(X1[1], model_rk4, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(OG.resnet_output(a, b, x0, 7, "shared")[0], network(a, 0, L=7)(x0),
                                   rtol=1e-12, atol=1e-13)


def test_smooth_profile_keeps_the_law_of_init_and_ends_at_theta_b():
    a, b = OG.draws([0], M=4, d=3, scale_u=1.0)
    p = OG.particles_at(a, b, torch.tensor([0.0, 1.0]), "smooth")
    torch.testing.assert_close(p["u"][0, 0], a["u"][0])
    torch.testing.assert_close(p["w"][0, 1], b["w"][0], rtol=0, atol=1e-15)


def test_gap_exponent_recovers_a_planted_first_order_error():
    L = np.array([8, 16, 32, 64, 128, 256])
    gaps = np.array([c / L * (1 + 2.0 / L - 5.0 / L**2) for c in (0.5, 1.0, 2.0)])
    iv = OG.gap_exponent(L, gaps)
    assert iv.value == pytest.approx(-1.0, abs=1e-3) and iv.contains(-1.0) and iv.hi - iv.lo < 0.05
    assert OG.gap_exponent(L, np.array([c / L**2 for c in (1.0, 2.0)])).value == pytest.approx(-2.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ode_gap_shared", "ode_gap_smooth"])
def test_quick_entry_end_to_end(quick_entry, name):
    saved, _ = quick_entry(REPRODUCE, name)
    assert saved["verdict"] == "PASS"  # Euler is first order: the quick sizes resolve it too
