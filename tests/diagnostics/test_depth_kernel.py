"""The depth-mobile tangent kernel from the fused node's stages (diagnostics/depth.py) against the explicit
Jacobian built row by row by backprop through torchdiffeq's steps (plain autograd). float64, one thread."""
import math

import pytest
import torch

from cotresnet.diagnostics import depth as DD
from cotresnet.model.depth import DepthMobileResNet
from cotresnet.model.spec import NetworkSpec

torch.set_num_threads(1)
F64 = torch.float64


def make(kernel, integrator, act="tanh", L=3, M=3, d=3, d_out=2, h=0.1, substeps=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(L * M, generator=g, dtype=F64)
    s[0], s[-1] = -0.02, 1.01  # outside [0, 1]: the fold acts on the depth columns
    p = {"u": 1.5 * torch.randn(L, M, d, generator=g, dtype=F64),
         "w": torch.randn(L, M, d, generator=g, dtype=F64) / math.sqrt(d),
         "b": 0.5 * torch.randn(L, M, generator=g, dtype=F64), "s": s.reshape(L, M)}
    spec = NetworkSpec(L=L, M=M, d=d, d_in=2, d_out=d_out, activation=act, integrator=integrator, substeps=substeps,
                       rtol=1e-6, atol=1e-8, dtype="float64", depth_kernel=kernel, bandwidth=h)
    R = torch.randn(d_out, d, generator=g, dtype=F64)  # a full readout: every state coordinate reaches the output
    return DepthMobileResNet(p, spec, torch.eye(d, 2, dtype=F64), R)


def kernel_by_rows(net, x, kappa):
    """J Jac Jac^T with Jac built row by row by backprop through torchdiffeq's steps (the kernel as it was)."""
    net = net.detached(backprop="autograd")
    net.s.requires_grad_(kappa is not None)
    params = [net.u, net.w, net.b] + ([net.s] if kappa is not None else [])
    rows = []
    for o in net(x).reshape(-1):
        grads = torch.autograd.grad(o, params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) * (kappa**0.5 if i == 3 else 1.0) for i, g in enumerate(grads)]))
    jac = torch.stack(rows)
    return net.J * jac @ jac.T


def inputs(n, seed=1):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("kernel", ["gaussian", "bump", "triweight"])
@pytest.mark.parametrize("integrator", ["euler", "rk4"])
@pytest.mark.parametrize("act", ["tanh", "silu"])
@pytest.mark.parametrize("kappa", [None, 3.0])
def test_stage_kernel_equals_the_row_by_row_kernel(kernel, integrator, act, kappa):
    net, x = make(kernel, integrator, act), inputs(6)
    K, ref = DD.tangent_kernel(net, x, kappa), kernel_by_rows(net, x, kappa)
    assert (K - ref).abs().max() <= 1e-12 * ref.abs().max()
    assert torch.linalg.eigvalsh(ref).min() > 1e-8 * ref.abs().max()  # a kernel with content in every direction


def test_samples_in_chunks_give_the_same_kernel():
    net, x = make("gaussian", "rk4"), inputs(7)
    whole = DD.tangent_kernel(net, x, 2.0)
    chunked = DD.tangent_kernel(net, x, 2.0, memory_budget=1)  # one sample at a time
    torch.testing.assert_close(chunked, whole, rtol=1e-13, atol=1e-15 * whole.abs().max().item())


def test_adaptive_steps_keep_the_row_by_row_kernel():
    net, x = make("gaussian", "dopri5", L=2, M=2, h=0.3), inputs(2)
    torch.testing.assert_close(DD.tangent_kernel(net, x, 1.5), kernel_by_rows(net, x, 1.5), rtol=1e-12, atol=0)


def test_kernel_diagnostics_reads_G_from_the_kernel():
    net, x = make("triweight", "euler"), inputs(6)
    y = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    kd = DD.kernel_diagnostics(net.detached(dtype="float32"), x, y, kappa=2.0)
    net64 = net.detached(dtype="float32").detached(dtype="float64")
    net64.s.requires_grad_(True)
    risk = net64.risk(x, y)
    grads = torch.autograd.grad(risk, [net64.u, net64.w, net64.b, net64.s])
    G = net64.J * (sum(g.pow(2).sum() for g in grads[:3]) + 2.0 * grads[3].pow(2).sum())
    assert kd.risk == pytest.approx(risk.item(), rel=1e-12)
    assert kd.grad_norm2 == pytest.approx(G.item(), rel=1e-10)
