"""The Lightning side of a job on several ranks (README "Many processes"): the strategy, one rank's module, and
the ranks' agreement on what a signal asked.

Lightning's DDP strategy gives the ranks their devices, the process group's life and barriers; its
DistributedDataParallel wrapper is left out: it would overwrite every particle shard with rank 0's when it wraps
the module, and it averages gradients, which is not the full-batch gradient when the sample shards differ in
size. The network completes each layer's sum over particles itself (distributed.ShardedResNet), and the module
sums its data group's gradients, each rank's risk being its samples' part of the full batch's.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

import lightning as pl
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.strategies import DDPStrategy

from ..distributed import RankGroups, shard_particles
from .module import COTFlowModule

PARTICLES = {k: f"net.{k}" for k in "uwb"}  # the state_dict entries a checkpoint holds whole


class FixedRanks(ClusterEnvironment):
    """A rank whose place job.ranks decided (started by us, by torchrun or by SLURM): Lightning starts nothing."""

    def __init__(self, rank: int, world: int, local_rank: int, node_rank: int, address: str, port: int):
        super().__init__()
        self._rank, self._world, self._local, self._node = rank, world, local_rank, node_rank
        self._address, self._port = address, port

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self._address

    @property
    def main_port(self) -> int:
        return self._port

    @staticmethod
    def detect() -> bool:
        return False

    def world_size(self) -> int:
        return self._world

    def set_world_size(self, size: int) -> None:
        pass

    def global_rank(self) -> int:
        return self._rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self._local

    def node_rank(self) -> int:
        return self._node


class ShardedStrategy(DDPStrategy):
    """DDP without the DistributedDataParallel wrapper (module doc); the process group is the job's, made by
    job.ranks before the Trainer starts."""

    def configure_ddp(self) -> None:
        pass


class ShardedFlowModule(COTFlowModule):
    """One rank's COT flow step: `net` is a distributed.ShardedResNet (particle shard p, sample shard q).

    After backward the data group's gradients are summed (one all-reduce), so every rank of a particle shard
    steps its particles by the full batch's gradient; the step's risk and squared gradient norms are summed over
    the world (one all-reduce of 4 numbers), identically on every rank, so that every rank's record takes the
    same stops.
    """

    def __init__(self, net, groups: RankGroups, dt: float, parameterization: str):
        super().__init__(net, dt, parameterization)
        self.groups = groups
        self.p, self.q = net.particle_sum.comm.rank, net.data_comm.rank

    def on_after_backward(self) -> None:
        if self.groups.data.size == 1:
            return
        grads = self.theta_grads()
        flat = self.groups.data.sum_(torch.cat([g.reshape(-1) for g in grads]))
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))

    def step_numbers(self) -> torch.Tensor:
        # each sum counts every term once: the risk of data group q from its first particle shard, the squared
        # gradient of shard p (the same in every data group after on_after_backward) from the first data group
        zero = torch.zeros((), dtype=torch.float64, device=self.net.u.device)
        parts = [self.last_risk.reshape(()).double() if self.p == 0 else zero]
        parts += [g.double().pow(2).sum() if self.q == 0 else zero for g in self.theta_grads()]
        total = self.groups.world.sum_(torch.stack(parts))
        return torch.cat([total[:1], total[1:].sqrt()])

    def gathered(self) -> Optional[COTFlowModule]:
        """A one-process module of the whole network on rank 0 (a gather within the first particle group, whose
        other ranks get None, as every other rank does at once)."""
        if self.q != 0:
            return None
        net = self.net.gathered()
        return None if net is None else COTFlowModule(net, self.dts[0], self.parameterization)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The checkpoint holds the whole network's particles (gathered on rank 0, which writes it)."""
        whole = self.net.gathered() if self.q == 0 else None
        if whole is not None:
            checkpoint["state_dict"].update({entry: getattr(whole, k) for k, entry in PARTICLES.items()})

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Each rank keeps its shard of the checkpoint's particles."""
        state = checkpoint["state_dict"]
        mine = shard_particles({k: state[entry] for k, entry in PARTICLES.items()}, self.p, self.groups.particles.size)
        state.update({entry: mine[k] for k, entry in PARTICLES.items()})


class AgreeOnRequests(pl.Callback):
    """After every step, what rank 0 was asked since the last one (a signal's stop, a checkpoint) reaches every
    rank (one broadcast of two numbers), so that all ranks checkpoint (a collective: the particles are gathered)
    and stop at the same step. Rank 0's signal handlers (`graceful`, a job.resume.GracefulStop) write into
    `requests`, never into `stop` and `checkpointer` directly: a signal between this broadcast and the checkpoint
    would make rank 0 alone checkpoint."""

    def __init__(self, requests, stop, checkpointer, groups: RankGroups, graceful=None):
        self.requests, self.stop, self.checkpointer, self.groups = requests, stop, checkpointer, groups
        self.graceful = graceful

    def on_train_start(self, trainer, pl_module):
        # Lightning's SIGTERM handler, registered as training starts, broadcasts from inside the handler on the rank
        # the signal reached: a collective no other rank joins. Rank 0 keeps its own handler, the others ignore it.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.graceful.request_stop if self.graceful else signal.SIG_IGN)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pending, self.requests.pending = self.requests.pending, []
        flags = torch.tensor([self.requests.requested or 0, len(pending)], device=pl_module.device)
        signum, n = self.groups.world.broadcast_(flags).tolist()
        if signum and self.stop.requested is None:
            self.stop.requested = signum
        for then in (pending if self.groups.is_root else [None] * min(n, 1)):
            self.checkpointer.request(then)


class Requests:
    """What rank 0's signal handlers asked (GracefulStop's `stop` and `checkpointer` in one), until
    AgreeOnRequests hands it to every rank."""

    def __init__(self):
        self.requested: Optional[int] = None
        self.pending: list = []

    def request(self, then=None) -> None:
        self.pending.append(then or (lambda: None))
