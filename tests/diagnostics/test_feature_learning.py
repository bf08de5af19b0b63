"""The feature-learning meter against brute force, float64: the linearized flow against an explicit gradient descent
on the linear model (jacrev Jacobian) and against central differences of the network, kernel movement against two
jacrev kernels, feature movement against a loop over layers, samples and particles."""
import math

import pytest
import torch
from torch.func import functional_call, jacrev

from cotresnet.diagnostics import feature_learning as FL
from cotresnet.diagnostics.kernels import tangent_kernel
from helpers import data, make_net

NAMES = ("u", "w", "b")


def flat_jacobian(net, x):
    """J = d vec(R X_1(x)) / d theta: (n d_out, P), rows (i, k), columns u, w, b flattened."""
    params = {k: getattr(net, k).detach() for k in NAMES}
    J = jacrev(lambda p: functional_call(net, p, (x,)).reshape(-1))(params)
    return torch.cat([J[k].reshape(J[k].shape[0], -1) for k in NAMES], 1)


def flat(net):
    return torch.cat([getattr(net, k).detach().reshape(-1) for k in NAMES])


def gd_steps(net, x, y, steps, dt):
    """The network after `steps` mean-field steps theta -= dt L M grad (plain autograd)."""
    net = net.detached()
    for _ in range(steps):
        grads = torch.autograd.grad(net.risk(x, y), [net.u, net.w, net.b])
        with torch.no_grad():
            for p, g in zip((net.u, net.w, net.b), grads):
                p -= dt * net.L * net.M * g
    return net


def test_linearized_residual_equals_gradient_descent_on_the_linear_model():
    net = make_net(L=3, M=5, d=4, d_in=3, d_out=2)
    x, y = data(N=6)
    n, dt, steps = x.shape[0], 0.3, 7
    J = flat_jacobian(net, x)
    f0 = net(x).detach()
    theta0 = flat(net)
    theta = theta0.clone()
    for _ in range(steps):  # theta -= dt L M grad of (1/n) sum 1/2 |f_lin - y|^2, f_lin = f0 + J (theta - theta0)
        r = f0.reshape(-1) + J @ (theta - theta0) - y.reshape(-1)
        theta = theta - dt * net.L * net.M * J.T @ r / n
    f_lin = f0 + (J @ (theta - theta0)).reshape(f0.shape)
    K0 = tangent_kernel(net, x)
    torch.testing.assert_close(K0, net.L * net.M * J @ J.T, rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(y + FL.linearized_residual(K0, f0 - y, steps, dt), f_lin, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(FL.linearized_residual(K0, f0 - y, 0, dt), f0 - y)


def test_linearized_step_is_the_networks_step_to_first_order_by_central_differences():
    # the linear model's first step, -dt K_0 r_0 / n, is J_0 times the network's step: the directional
    # derivative of the outputs along that step, by central differences
    net = make_net(L=4, M=6, d=4, d_in=3, d_out=2)
    x, y = data(N=5)
    dt = 0.05
    f0 = net(x).detach()
    grads = torch.autograd.grad(net.risk(x, y), [net.u, net.w, net.b])
    step = [-dt * net.L * net.M * g for g in grads]

    def moved(h):
        other = net.detached()
        with torch.no_grad():
            for p, s in zip((other.u, other.w, other.b), step):
                p += h * s
        return other(x).detach()

    h = 1e-4
    directional = (moved(h) - moved(-h)) / (2 * h)
    K0 = tangent_kernel(net, x)
    linear_step = FL.linearized_residual(K0, f0 - y, 1, dt) - (f0 - y)
    torch.testing.assert_close(linear_step, directional, rtol=1e-7, atol=1e-10)
    # and the network's own step leaves the linear one at second order: error ratio ~4 when dt halves
    err = [float((moved(s) - f0 - s * linear_step).norm()) for s in (1.0, 0.5)]
    assert 3.5 < err[0] / err[1] < 4.5


def test_kernel_movement_equals_the_change_of_two_exact_kernels():
    init = make_net(L=3, M=5, d=4, d_in=3, d_out=2, scale_u=1.0)
    x, y = data(N=6)
    final = gd_steps(init, x, y, steps=20, dt=0.5)
    K_a = init.L * init.M * flat_jacobian(init, x) @ flat_jacobian(init, x).T
    K_b = final.L * final.M * flat_jacobian(final, x) @ flat_jacobian(final, x).T
    exact = float((K_b - K_a).norm() / K_a.norm())
    meter = FL.feature_learning(init, final, x, y, steps=20, dt=0.5)
    assert exact > 1e-3  # the kernel did move
    assert meter.kernel_movement == pytest.approx(exact, rel=1e-10)
    assert FL.kernel_movement(K_a, K_a) == 0.0


def test_feature_movement_equals_a_loop_over_layers_samples_and_particles():
    init = make_net(L=3, M=4, d=4, d_in=3, d_out=2, act="silu")
    x, y = data(N=5)
    final = gd_steps(init, x, y, steps=5, dt=0.5)

    def features(net):
        F = torch.zeros(net.L, x.shape[0], net.M, dtype=torch.float64)
        for i in range(x.shape[0]):
            state = net.embedding @ x[i]
            for l in range(net.L):
                field = torch.zeros(net.d, dtype=torch.float64)
                for m in range(net.M):
                    F[l, i, m] = torch.nn.functional.silu(net.w[l, m].detach() @ state + net.b[l, m].detach())
                    field += net.u[l, m].detach() * F[l, i, m]
                state = state + field / (net.L * net.M)
        return F

    F0, F1 = features(init), features(final)
    torch.testing.assert_close(FL.layer_features(init, x), F0, rtol=1e-12, atol=1e-14)
    expected = torch.stack([(F1[l] - F0[l]).norm() / F0[l].norm() for l in range(init.L)])
    meter = FL.feature_learning(init, final, x, y, steps=5, dt=0.5)
    torch.testing.assert_close(meter.feature_movement, expected, rtol=1e-10, atol=1e-14)
    assert meter.row()["feature_movement_max"] == pytest.approx(float(expected.max()))


def test_distance_from_linearization_is_first_order_in_the_movement():
    # f_t - f_t^lin = O(|theta_t - theta_0|^2) while f_t - f_0 = O(|theta_t - theta_0|): the ratio halves with
    # the flow time trained, and the row a callback logs is the same meter
    init = make_net(L=3, M=6, d=4, d_in=3, d_out=2)
    x, y = data(N=6)
    distance = []
    for steps in (40, 20):  # many small steps: the flow's own O(t) regime, not the first steps' discrete one
        final = gd_steps(init, x, y, steps=steps, dt=5e-5)
        distance.append(FL.feature_learning(init, final, x, y, steps, 5e-5).linearization_distance)
    assert 1.85 < distance[0] / distance[1] < 2.15
    ref = FL.reference(init, x)
    row = FL.feature_learning_row(final, x, y, ref.K_0, ref.f_0, ref.F_0, 20, 5e-5)
    assert row["linearization_distance"] == pytest.approx(distance[1], rel=1e-12)
    assert math.isnan(FL.linearization_distance(ref.f_0, ref.f_0, ref.f_0))
