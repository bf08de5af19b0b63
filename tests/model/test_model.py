"""The model against brute force: naive loops, exact piecewise solutions, finite differences."""
import math
from dataclasses import replace

import pytest
import torch
from torchdiffeq import odeint

from cotresnet.job.memory import saved_tensor_bytes
from cotresnet.model.activations import ACTIVATION_FUNCTIONS, activation, activation_derivative
from cotresnet.model.build import network_from_meta
from cotresnet.model.euler import euler_flow
from cotresnet.model.layered import MeanFieldResNet, layer_boundaries, layer_index
from cotresnet.model.particles import embedding_matrix, init_particles, readout_matrix
from cotresnet.model.spec import NetworkSpec
from helpers import central_difference, data, make_net


@pytest.mark.parametrize("L", [1, 3, 7, 50, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layer_index_at_and_around_every_boundary(L, dtype):
    bnd = layer_boundaries(L, dtype)
    # k / L computed the way a solver grid is, and its float neighbours on both sides
    s = torch.arange(L + 1, dtype=dtype) / L
    below = torch.nextafter(s, torch.full_like(s, -math.inf))
    above = torch.nextafter(s, torch.full_like(s, math.inf))
    k = torch.arange(L + 1)
    assert torch.equal(layer_index(s, bnd), k.clamp(max=L - 1))
    assert torch.equal(layer_index(below, bnd), (k - 1).clamp(0, L - 1))
    assert torch.equal(layer_index(above, bnd), k.clamp(max=L - 1))
    mid = (s[:-1] + s[1:]) / 2
    assert torch.equal(layer_index(mid, bnd), k[:-1])
    # outside [0, 1] clamps to the first / last layer
    assert layer_index(torch.tensor([-0.5, 1.5], dtype=dtype), bnd).tolist() == [0, L - 1]


def test_layer_index_matches_floor_definition_on_random_depths():
    L = 37
    s = torch.rand(10_000, dtype=torch.float64)
    ref = torch.minimum(torch.floor(s * L), torch.tensor(L - 1.0)).long()
    # away from boundaries the exact definition and the float formula agree
    safe = ((s * L) - torch.round(s * L)).abs() > 1e-9
    assert torch.equal(layer_index(s, layer_boundaries(L))[safe], ref[safe])


@pytest.mark.parametrize("act", ["tanh", "silu", "gelu", "softplus", "relu"])
def test_euler_forward_equals_naive_double_loop(act):
    net = make_net(act=act)
    x, _ = data()
    X = net.embed(x)
    ref = X.clone()
    L, M = net.L, net.M
    sigma = activation(act)
    for l in range(L):
        inc = torch.zeros_like(ref)
        for m in range(M):
            for i in range(ref.shape[0]):
                inc[i] += net.u[l, m] * sigma(net.w[l, m] @ ref[i] + net.b[l, m])
        ref = ref + inc / (L * M)
    torch.testing.assert_close(net.flow(X), ref.detach(), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("act", ["tanh", "silu", "gelu", "softplus"])
def test_activation_derivative_matches_autograd(act):
    z = torch.linspace(-4, 4, 101, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(activation(act)(z).sum(), z)
    torch.testing.assert_close(activation_derivative(act, z.detach()), g, rtol=1e-12, atol=1e-12)


def flow_inputs(R=None, L=4, M=6, d=3, N=9, seed=0):
    """(X0, u, w, b) in float64 requiring grad: one network, or R stacked ones when R is given."""
    g = torch.Generator().manual_seed(seed)
    lead = () if R is None else (R,)
    shapes = [(*lead, N, d), (*lead, L, M, d), (*lead, L, M, d), (*lead, L, M)]
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("act", sorted(ACTIVATION_FUNCTIONS))
@pytest.mark.parametrize("mode", ["fused", "recompute"])
@pytest.mark.parametrize("R", [None, 3])
def test_fused_backprop_equals_autograd(act, mode, R):
    inputs = flow_inputs(R)
    # a cotangent on every state, not only the last: the node must pass gradients that enter midway
    cot = torch.randn(5, *inputs[0].shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = torch.stack(euler_flow(*inputs, act, "autograd"))
    out = torch.stack(euler_flow(*inputs, act, mode))
    assert torch.equal(out, ref)  # the forward is the same bits
    for g, g_ref in zip(torch.autograd.grad((out * cot).sum(), inputs), torch.autograd.grad((ref * cot).sum(), inputs)):
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("act", ["tanh", "silu", "softplus"])
@pytest.mark.parametrize("mode", ["fused", "recompute"])
def test_fused_backprop_equals_finite_differences(act, mode):
    inputs = flow_inputs(R=2, L=3, M=4, d=2, N=5)
    assert torch.autograd.gradcheck(lambda *a: torch.stack(euler_flow(*a, act, mode)), inputs, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("act, autograd_per_layer", [("tanh", 1), ("silu", 2)])
def test_fused_backprop_keeps_less_than_autograd(act, autograd_per_layer):
    L, M, d, N = 5, 64, 3, 40
    X0, u, w, b = flow_inputs(L=L, M=M, d=d, N=N)
    kept = {mode: saved_tensor_bytes(lambda: euler_flow(X0, u, w, b, act, mode)[-1], exclude=(u, w, b))
            for mode in ("autograd", "fused", "recompute")}
    states, layer = L * N * d * 8, L * N * M * 8
    assert kept["recompute"] == states  # X_0 .. X_{L-1} only
    assert kept["fused"] == states + layer  # plus one (N, M) tensor per layer
    assert kept["autograd"] == states + autograd_per_layer * layer  # sigma(Z_l), and Z_l for silu


@pytest.mark.parametrize("L", [3, 7, 50, 100])
def test_torchdiffeq_euler_at_one_step_per_layer_equals_the_resnet(L):
    net = make_net(L=L, M=3)
    x, _ = data()
    X = net.embed(x)
    ode = odeint(lambda t, y: net.field(int(layer_index(t, net.boundaries(t.dtype, t.device))), y), X,
                 layer_boundaries(L), method="euler")[-1]
    torch.testing.assert_close(ode, net.states(X)[-1], rtol=1e-12, atol=1e-12)


def exact_piecewise_flow(net, X, substeps=2000):
    """Reference: each layer's autonomous ODE solved with a very fine classical rk4, layer by layer."""
    x = X.clone()
    h = 1.0 / (net.L * substeps)
    for l in range(net.L):
        f = lambda y: net.field(l, y)
        for _ in range(substeps):
            k1 = f(x)
            k2 = f(x + h / 2 * k1)
            k3 = f(x + h / 2 * k2)
            k4 = f(x + h * k3)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


@torch.no_grad()
def test_rk4_converges_to_exact_piecewise_solution_and_dopri5_agrees():
    net = make_net(L=3, M=6, scale_u=8.0)
    x, _ = data()
    X = net.embed(x)
    exact = exact_piecewise_flow(net, X)
    errors = []
    for k in (1, 2, 4, 8, 16, 32):
        net.spec = replace(net.spec, integrator="rk4", substeps=k)
        errors.append((net.flow(X) - exact).abs().max().item())
    assert errors[-1] < 1e-7
    # fourth order: halving the step divides the error by about 16
    assert all(e2 < e1 / 8 for e1, e2 in zip(errors, errors[1:])), errors
    net.spec = replace(net.spec, integrator="dopri5", rtol=1e-10, atol=1e-12)
    dopri = net.flow(X)
    net.spec = replace(net.spec, integrator="rk4", substeps=64)
    assert (dopri - net.flow(X)).abs().max().item() < 1e-6


@pytest.mark.parametrize("integrator", ["rk4", "dopri5"])
def test_adjoint_gradients_equal_direct_backprop(integrator):
    # the adjoint integrates the continuous adjoint ODE, so it matches backprop up to the
    # integrator's error: fine steps / tight tolerances make that error negligible
    x, y = data()
    grads = []
    for adjoint in (False, True):
        net = make_net(L=4, M=5, integrator=integrator, substeps=16, rtol=1e-11, atol=1e-13, adjoint=adjoint)
        net.risk(x, y).backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g1, g0, rtol=1e-6, atol=1e-9)


def test_risk_gradient_equals_central_finite_differences():
    net = make_net(L=4, M=5)
    x, y = data()
    net.risk(x, y).backward()
    for name, idx in [("u", (0, 1, 2)), ("u", (3, 4, 0)), ("w", (1, 0, 1)), ("w", (2, 3, 3)),
                      ("b", (0, 2)), ("b", (3, 4))]:
        p = getattr(net, name)
        fd = central_difference(lambda: net.risk(x, y).item(), p, idx)
        assert abs(p.grad[idx].item() - fd) <= 1e-7 * max(1.0, abs(fd)), (name, idx, p.grad[idx].item(), fd)


def test_init_schemes_and_scales():
    p = init_particles(6, 4000, 5, scale_u=2.0, scale_w=3.0, scale_b=0.5, seed=0, dtype=torch.float64)
    assert p["u"].shape == (6, 4000, 5) and p["b"].shape == (6, 4000)
    assert abs(p["u"].std().item() - 2.0) < 0.03
    assert abs(p["w"].std().item() - 3.0 / math.sqrt(5)) < 0.02
    assert abs(p["b"].std().item() - 0.5) < 0.01
    assert not torch.equal(p["u"][0], p["u"][1])
    s = init_particles(6, 10, 5, scheme="shared", seed=0)
    assert all(torch.equal(s[k][0], s[k][l]) for k in "uwb" for l in range(6))
    s["u"][0, 0, 0] += 1  # layers are independent tensors after the copy
    assert not torch.equal(s["u"][0], s["u"][1])
    assert torch.equal(init_particles(3, 4, 2, seed=0)["u"], init_particles(3, 4, 2, seed=0)["u"])
    assert not torch.equal(init_particles(3, 4, 2, seed=0)["u"], init_particles(3, 4, 2, seed=1)["u"])
    zero = init_particles(3, 4, 2, scale_u=0.0, seed=0)
    assert torch.count_nonzero(zero["u"]) == 0


def test_orthogonal_embedding_and_readout():
    E = embedding_matrix("orthogonal", 6, 3, seed=0, dtype=torch.float64)
    R = readout_matrix("orthogonal", 6, 2, seed=0, dtype=torch.float64)
    torch.testing.assert_close(E.T @ E, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(R @ R.T, torch.eye(2, dtype=torch.float64))
    assert torch.equal(embedding_matrix("pad", 4, 2, 0)[:, 0], torch.tensor([1.0, 0, 0, 0]))


def test_relu_warns_once_about_theory():
    from cotresnet.model import activations as activations
    activations._RELU_WARNED = False
    with pytest.warns(UserWarning, match="regularity assumptions"):
        activation("relu")


def test_spec_rebuilds_the_network_and_refuses_mismatched_particles():
    net = make_net(act="silu", integrator="rk4", substeps=3)
    again = network_from_meta(net.particles(), net.meta())
    assert again.spec == net.spec
    x, _ = data()
    torch.testing.assert_close(again(x), net(x), rtol=0, atol=0)
    bad = {**net.particles(), "b": torch.zeros(net.L, net.M + 1, dtype=torch.float64)}
    with pytest.raises(ValueError, match="b \\(5, 8\\) \\(spec: \\(5, 7\\)\\)"):
        MeanFieldResNet(bad, net.spec, net.embedding, net.readout)
    assert NetworkSpec.from_meta({**net.meta(), "parameterization": "mean_field"}) == net.spec
