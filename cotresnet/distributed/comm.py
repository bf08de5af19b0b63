"""Sums over groups of ranks, as the sharded flow uses them (docs/math.md, "Many processes").

A `Comm` is one group of ranks: a torch.distributed ProcessGroup, called directly (so that groups made from a
store in threads, as the tests make them, and the groups of a job's process group work alike), or None for a
process alone. Two differentiable sums carry the flow's adjoint:

- within a particle group every rank computes the same states and the same risk from its own particles:
  the state enters each rank's partial sum over particles (`enter`: forward identity, backward the sum of the
  ranks' adjoints) and the partial sums are completed (`total`: forward all-reduce, backward identity);
- within a data group each rank's risk is its own samples' part: a sum over the group that the risk depends
  on is summed forward and backward (`data_total`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


class Comm:
    """A group of ranks, or this process alone (`group` None)."""

    def __init__(self, group=None):
        self.group = group

    @property
    def size(self) -> int:
        return 1 if self.group is None else self.group.size()

    @property
    def rank(self) -> int:
        return 0 if self.group is None else self.group.rank()

    def sum_(self, t: Tensor) -> Tensor:
        """t summed over the group, in place (every rank gets the same bits); returns t."""
        if self.size > 1:
            self.group.allreduce([t]).wait()
        return t

    def broadcast_(self, t: Tensor, root: int = 0) -> Tensor:
        """t of the group's rank `root`, in place on every rank; returns t."""
        if self.size > 1:
            import torch.distributed as dist

            opts = dist.BroadcastOptions()
            opts.rootRank = root
            self.group.broadcast([t], opts).wait()
        return t

    def gather(self, t: Tensor, dim: int) -> Optional[Tensor]:
        """The ranks' tensors concatenated along `dim` in rank order, on the group's rank 0; None elsewhere."""
        if self.size == 1:
            return t
        import torch.distributed as dist

        t = t.contiguous()
        out = [[torch.empty_like(t) for _ in range(self.size)]] if self.rank == 0 else []
        opts = dist.GatherOptions()
        opts.rootRank = 0
        self.group.gather(out, [t], opts).wait()
        return torch.cat(out[0], dim) if self.rank == 0 else None


class _Enter(torch.autograd.Function):
    """x, the same on every rank of a particle group, enters each rank's partial sum: forward identity, backward
    the sum of the ranks' adjoints (each rank's particles contribute their part of dL/dx)."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.comm.sum_(g.clone()), None


class _Total(torch.autograd.Function):
    """Partial sums completed over a particle group: forward all-reduce, backward identity (the total is used
    alike on every rank, and each rank's risk is the same)."""

    @staticmethod
    def forward(ctx, part, comm):
        return comm.sum_(part.clone())

    @staticmethod
    def backward(ctx, g):
        return g, None


class _DataTotal(torch.autograd.Function):
    """A sum over a data group that every rank's own risk depends on: forward all-reduce, backward all-reduce (the
    full-batch risk is the sum of the ranks' risks)."""

    @staticmethod
    def forward(ctx, part, comm):
        ctx.comm = comm
        return comm.sum_(part.clone())

    @staticmethod
    def backward(ctx, g):
        return ctx.comm.sum_(g.clone()), None


@dataclass
class ParticleSum:
    """The sum over a layer's M particles when each rank of `comm` holds M / S of them: `enter` the state, form the
    rank's partial sum, `total` it. Read by the Euler node (model/euler.py) and the ODE field (sharded.py)."""

    comm: Comm
    M: int  # the particles of a layer, over all shards

    def enter(self, x: Tensor) -> Tensor:
        return _Enter.apply(x, self.comm) if torch.is_grad_enabled() and x.requires_grad else x

    def total(self, part: Tensor) -> Tensor:
        """part: ([R,] N, d), this rank's partial sum -> the sum over all particles (same shape)."""
        if torch.is_grad_enabled() and part.requires_grad:
            return _Total.apply(part, self.comm)
        return self.comm.sum_(part)


def data_total(part: Tensor, comm: Comm) -> Tensor:
    """A number summed over a data group, differentiably (see `_DataTotal`)."""
    return _DataTotal.apply(part, comm) if comm.size > 1 else part


@dataclass
class RankGroups:
    """This rank's groups: the world, its particle group (same samples, complementary particles) and its data group
    (same particles, other samples); q, p: its data group and particle shard (config/layout.py)."""

    world: Comm
    particles: Comm
    data: Comm
    rank: int = 0

    @property
    def is_root(self) -> bool:
        """The rank that writes the job's files (global rank 0)."""
        return self.rank == 0


def rank_groups(layout, rank: int) -> RankGroups:
    """This rank's groups within the initialized default process group. torch.distributed makes a group on every
    rank, member or not, in one order: every particle group, then every data group."""
    import torch.distributed as dist

    q, p = layout.coords(rank)

    def mine(all_ranks, index):
        made = [Comm(dist.new_group(ranks)) if len(ranks) > 1 else Comm() for ranks in all_ranks]
        return made[index]

    return RankGroups(Comm(dist.group.WORLD), mine([layout.particle_group(i) for i in range(layout.D)], q),
                      mine([layout.data_group(i) for i in range(layout.S)], p), rank)
