"""Training: the Lightning path is the gradient-flow step, the flow does not depend on (L, M),
the command line leaves the run directory of design.md section 6, bad configs are refused."""

import pytest
import torch

from cotresnet.config.compose import compose_config
from cotresnet.data import Minibatches, RepeatBatch
from cotresnet.job.checks import check_config
from cotresnet.model.build import student_network
from cotresnet.record import learning_rate
from helpers import SMALL, read_particles, train_small


@pytest.mark.parametrize("overrides", [[], ["optim.parameterization=standard"], ["optim.batch_size=5"],
                                       ["model.backprop=recompute"], ["trainer.compile=default"],
                                       ["trainer.compile=reduce-overhead"]])
def test_lightning_training_equals_plain_gradient_descent(tmp_path, overrides):
    args = ["model.dtype=float64", "trainer.max_steps=7", "callbacks.kernel_every=0", "callbacks.ot_every=0",
            "optim.dt=0.05", *overrides]
    cfg = compose_config(SMALL + args)
    ds = check_config(cfg)
    train_small(tmp_path, *args)
    final = read_particles(tmp_path)["final"]
    net = student_network(cfg, ds.d_in, ds.d_out).detached(backprop="autograd")  # the reference is plain PyTorch
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate(0.05, 3, 8, cfg.optim.parameterization))
    batches = (RepeatBatch((ds.x_train, ds.y_train), 7) if cfg.optim.batch_size is None
               else Minibatches(ds.x_train, ds.y_train, cfg.optim.batch_size, 7, cfg.seed))
    for x, y in batches:
        opt.zero_grad()
        net.risk(x, y).backward()
        opt.step()
    for k in "uwb":
        torch.testing.assert_close(final[k], getattr(net, k).detach(), rtol=0, atol=1e-13)


def final_risks(parameterization, seeds=range(4), steps=200, dt=0.1):
    out = []
    for seed in seeds:
        row = []
        for L, M in [(4, 32), (8, 128), (16, 512)]:
            cfg = compose_config([f"model.L={L}", f"model.M={M}", f"seed={seed}", "data.n_train=128",
                                  f"optim.parameterization={parameterization}"])
            ds = check_config(cfg)
            net = student_network(cfg, ds.d_in, ds.d_out)
            opt = torch.optim.SGD(net.parameters(), lr=learning_rate(dt, L, M, parameterization))
            x, y = ds.x_train.float(), ds.y_train.float()
            risk0 = net.risk(x, y).item()
            for _ in range(steps):
                opt.zero_grad()
                net.risk(x, y).backward()
                opt.step()
            row.append((risk0, net.risk(x, y).item()))
        out.append(row)
    return torch.tensor(out)  # (seeds, sizes, [initial, final])


@pytest.mark.slow  # 2400 SGD steps across sizes and seeds: ~30 s
def test_mean_field_flow_does_not_depend_on_L_and_M_but_standard_does():
    mf = final_risks("mean_field")
    final = mf[:, :, 1]
    gaps = (final[:, 1:] - final[:, :-1]).abs().mean(0)  # mean over seeds of |r(k+1) - r(k)|
    assert gaps[1] < 0.6 * gaps[0], gaps
    assert (final < 0.1 * mf[:, :, 0]).all()  # the flow trains at every size
    std = final_risks("standard")
    drop = (std[:, :, 0] - std[:, :, 1]).mean(0)
    # without the L M factor the same dt moves a (16, 512) network far less than a (4, 32) one
    assert drop[0] > 3 * drop[2] and drop[2] < 0.1 * (mf[:, 2, 0] - mf[:, 2, 1]).mean(), drop


