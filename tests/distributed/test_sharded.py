"""The sharded flow is the one-process flow: ranks that split every layer's particles (S) and the samples (D, in
unequal shards) give the risk and the gradient of the whole network to round-off, for every integrator and
backward. The ranks run as threads of this process, with gloo groups over one in-memory store."""
import threading
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from cotresnet.config.layout import Layout, shard
from cotresnet.distributed import Comm, RankGroups, ShardedResNet, gather_particles, shard_particles
from helpers import data, make_net

LAYOUTS = [Layout(2, 2), Layout(2, 1), Layout(4, 2)]  # S = 2; D = 2; S = D = 2


def run_ranks(layout: Layout, fn):
    """fn(groups) on every rank of `layout`, one thread each; the results by rank."""
    store = dist.HashStore()

    def comm(name, rank, size):
        if size == 1:
            return Comm()
        return Comm(dist.ProcessGroupGloo(dist.PrefixStore(name, store), rank, size, timedelta(seconds=60)))

    results, errors = {}, []

    def target(rank):
        q, p = layout.coords(rank)
        try:
            groups = RankGroups(comm("world", rank, layout.ranks), comm(f"particles{q}", p, layout.S),
                                comm(f"data{p}", q, layout.D), rank)
            results[rank] = fn(groups)
        except BaseException as e:  # noqa: B036 (reported below, after the other ranks)
            errors.append(e)

    threads = [threading.Thread(target=target, args=(r,)) for r in range(layout.ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == layout.ranks, "a rank did not finish"
    return results


def sharded_grads(net, x, y, layout: Layout):
    """(risk, {u, w, b} gradients) of the whole network, assembled from the ranks of `layout`."""
    full = net.particles()

    def rank(groups):
        q, p = layout.coords(groups.rank)
        start, stop = shard(x.shape[0], layout.D, q)
        mine = ShardedResNet(shard_particles(full, p, layout.S), net.spec, net.embedding, net.readout,
                             groups.particles, groups.data, x.shape[0])
        risk = mine.risk(x[start:stop], y[start:stop])
        risk.backward()
        grads = {k: groups.data.sum_(getattr(mine, k).grad) for k in "uwb"}
        return groups.data.sum_(risk.detach().clone()), gather_particles(grads, groups.particles)

    out = run_ranks(layout, rank)
    return out[0][0], out[0][1]


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
@pytest.mark.parametrize("spec", [{}, {"backprop": "recompute"}, {"backprop": "autograd"},
                                  {"integrator": "rk4", "substeps": 2}, {"integrator": "dopri5"},
                                  {"integrator": "rk4", "adjoint": True}], ids=str)
def test_shards_give_the_whole_networks_risk_and_gradient(layout, spec):
    net = make_net(L=3, M=6, **spec)
    x, y = data(N=11)  # D = 2: shards of 6 and 5 samples
    risk = net.risk(x, y)
    risk.backward()
    got_risk, got = sharded_grads(net, x, y, layout)
    torch.testing.assert_close(got_risk, risk.detach(), rtol=1e-13, atol=0)
    for k in "uwb":
        torch.testing.assert_close(got[k], getattr(net, k).grad, rtol=1e-11, atol=1e-14)


def test_gathered_shards_are_the_particles_and_the_network():
    net = make_net(L=2, M=6)
    layout = Layout(3, 3)

    def rank(groups):
        mine = ShardedResNet(shard_particles(net.particles(), groups.rank, 3), net.spec, net.embedding, net.readout,
                             groups.particles, groups.data, 1)
        return mine.gathered()

    out = run_ranks(layout, rank)
    assert out[1] is None and out[2] is None
    for k in "uwb":
        assert torch.equal(getattr(out[0], k), getattr(net, k))
    assert out[0].spec == net.spec


def test_shards_of_samples_and_particles_cover_them_once():
    assert [shard(11, 3, i) for i in range(3)] == [(0, 4), (4, 8), (8, 11)]
    assert [shard(12, 3, i) for i in range(3)] == [(0, 4), (4, 8), (8, 12)]
    layout = Layout(6, 2)
    assert layout.D == 3 and layout.coords(5) == (2, 1)
    assert layout.particle_group(1) == [2, 3] and layout.data_group(1) == [1, 3, 5]
