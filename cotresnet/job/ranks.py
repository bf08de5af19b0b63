"""A job's ranks: where they come from, how they learn the job, the process group they join (README "Many
processes").

Rank 0 is the process Hydra runs the job in: it checks the job, owns the run directory and writes every file.
The other ranks only compute. They learn the job (its configuration, run directory, identity and plan) from rank
0 through a TCPStore and join the job's own process group, so that every job of a sweep has its own. They come
- from rank 0 itself (`trainer.devices` ranks on this node): it starts them for the job, `python -m
  cotresnet.job.follow`, and joins them after it;
- from torchrun or SLURM (srun, or the tasks of hydra/launcher=slurm): the launcher started every rank; rank 0
  runs Hydra (one run or a whole sweep) and the others wait in job.follow for its jobs until it says the end.
Lightning's own DDP launcher re-runs the command line in every child, which under Hydra's multirun starts the
whole sweep again (Lightning issue 15737); here Hydra runs in rank 0 only.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import List, Optional

from ..config.layout import Layout

log = logging.getLogger("cotresnet")
KEY = "cotresnet/job/{}"  # the store's key of a job description (JSON; null: no more jobs)
ENDED = "cotresnet/ended"  # how many ranks read the end (rank 0's store must outlive their last read)
WAIT = timedelta(days=7)  # how long ranks wait for rank 0's next job (a sweep may run long jobs in between)
# how long a collective waits for the other ranks; rank 0 computes a row's diagnostics while the others wait
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


@dataclass
class Ranks:
    """This process's place among a job's ranks, and where rank 0's store listens."""

    rank: int
    world: int
    local_rank: int
    node_rank: int
    address: str
    port: int
    launcher: str  # builtin | torchrun | slurm

    @property
    def shares_cpus(self) -> bool:
        """The node's ranks share one CPU allocation (SLURM gives each task its own)."""
        return self.launcher != "slurm"


def launched_ranks() -> Optional[Ranks]:
    """The ranks torchrun or SLURM started this process among (more than one), else None."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        return Ranks(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["LOCAL_RANK"]), int(env.get("GROUP_RANK", "0")),
                     env["MASTER_ADDR"], int(env["MASTER_PORT"]), "torchrun")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():
            s = SLURMEnvironment(auto_requeue=False)
            return Ranks(s.global_rank(), s.world_size(), s.local_rank(), s.node_rank(), s.main_address, s.main_port,
                         "slurm")
    return None


def connect(ranks: Ranks):
    """The store of rank 0's jobs: rank 0 hosts it, unless torchrun's agent already does (at MASTER_PORT)."""
    import torch.distributed as dist

    host = ranks.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    return dist.TCPStore(ranks.address, ranks.port, None, host, WAIT, wait_for_workers=False)


def publish(store, k: int, job: Optional[dict]) -> None:
    store.set(KEY.format(k), json.dumps(job))


def end(store, k: int, world: int, timeout: float = 60.0) -> None:
    """No job k (nor any after it); returns once every other rank read that (or after `timeout` seconds)."""
    import time

    publish(store, k, None)
    deadline = time.monotonic() + timeout
    while store.add(ENDED, 0) < world - 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def describe(check) -> dict:
    """What the other ranks need of a checked job: rank 0 checked it, so they take it as it is."""
    from omegaconf import OmegaConf

    return {"config": OmegaConf.to_container(check.cfg, resolve=True), "run_dir": str(check.run_dir),
            "identity": check.identity, "action": check.plan.action,
            "checkpoint": None if check.plan.checkpoint is None else str(check.plan.checkpoint)}


class JobRanks:
    """This rank's part in a job: its layout and groups, and what fit needs to train the rank's shard."""

    def __init__(self, ranks: Ranks, layout: Layout, groups, backend: str):
        """groups: this rank's distributed.RankGroups."""
        self.ranks, self.layout, self.groups, self.backend = ranks, layout, groups, backend
        self.q, self.p = layout.coords(ranks.rank)

    def trainer_args(self, cfg) -> dict:
        from .parallel import FixedRanks, ShardedStrategy

        r = self.ranks
        env = FixedRanks(r.rank, r.world, r.local_rank, r.node_rank, r.address, r.port)
        return {"devices": cfg.trainer.devices, "num_nodes": cfg.trainer.num_nodes, "use_distributed_sampler": False,
                "strategy": ShardedStrategy(cluster_environment=env, process_group_backend=self.backend,
                                            timeout=PROCESS_GROUP_TIMEOUT)}

    def threads_share(self, cfg) -> tuple:
        """(ranks sharing this process's CPUs,) for threads.configure."""
        return (cfg.trainer.devices if self.ranks.shares_cpus else 1,)

    def network_and_module(self, net, n_train: int, optim):
        """This rank's shard of the initial network (every rank draws the same particles) and its module."""
        from ..distributed import ShardedResNet, shard_particles
        from .parallel import ShardedFlowModule

        mine = ShardedResNet(shard_particles(net.particles(), self.p, self.layout.S), net.spec, net.embedding,
                             net.readout, self.groups.particles, self.groups.data, n_train)
        return mine, ShardedFlowModule(mine, self.groups, optim.dt, optim.parameterization)

    def samples(self, data):
        from ..distributed import sample_shard

        return sample_shard(data, self.q, self.layout.D)

    def agreement(self, stop, checkpointer):
        """(this rank's signal handlers while it trains, [the callback that hands what rank 0's ask to every rank
        after each step]); the other ranks ignore signals."""
        from contextlib import nullcontext

        from .parallel import AgreeOnRequests, Requests
        from .resume import GracefulStop

        requests = Requests()
        graceful = GracefulStop(requests, requests) if self.groups.is_root else None
        return graceful or nullcontext(), [AgreeOnRequests(requests, stop, checkpointer, self.groups, graceful)]


@contextmanager
def joined(ranks: Ranks, store, k: int, cfg):
    """Job k's process group over `ranks`, this rank's groups in it; destroyed on the way out (the other ranks'
    collectives then fail at once instead of waiting for a rank that left)."""
    import torch
    import torch.distributed as dist

    from ..distributed import rank_groups

    layout = Layout.of(cfg)
    backend = "nccl" if cfg.trainer.accelerator in ("gpu", "cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, store=dist.PrefixStore(f"cotresnet/group/{k}", store), rank=ranks.rank,
                            world_size=ranks.world, timeout=PROCESS_GROUP_TIMEOUT)
    try:
        yield JobRanks(ranks, layout, rank_groups(layout, ranks.rank), backend)
    finally:
        dist.destroy_process_group()


_LAUNCHED = {}  # this process's store and job count, when torchrun or SLURM started its ranks


def launched_store(ranks: Ranks):
    if "store" not in _LAUNCHED:
        _LAUNCHED.update(store=connect(ranks), jobs=0)
    return _LAUNCHED["store"]


def end_launched_jobs(ranks: Ranks) -> None:
    """Rank 0 of ranks torchrun or SLURM started: no more jobs (the others' job.follow returns)."""
    end(launched_store(ranks), _LAUNCHED["jobs"], ranks.world)


@contextmanager
def job_ranks(check):
    """Around rank 0's training of a checked job: None for one process, else its JobRanks, the other ranks
    started (or found) and following it in the job's process group."""
    layout = Layout.of(check.cfg)
    if not layout.parallel:
        yield None
        return
    launched = launched_ranks()
    if launched is not None:
        store = launched_store(launched)
        k = _LAUNCHED["jobs"]
        _LAUNCHED["jobs"] += 1
        publish(store, k, describe(check))
        with joined(launched, store, k, check.cfg) as ranks:
            yield ranks
        return
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, None, True, WAIT, wait_for_workers=False)
    ranks = Ranks(0, layout.ranks, 0, 0, "127.0.0.1", store.port, "builtin")
    publish(store, 0, describe(check))
    followers = start_followers(ranks)
    try:
        with joined(ranks, store, 0, check.cfg) as job:
            yield job
    finally:  # the store lives until the ranks it started have ended (they read the end from it)
        publish(store, 1, None)
        stop_followers(followers)


def start_followers(ranks: Ranks) -> List[subprocess.Popen]:
    """Ranks 1 .. world - 1 on this node, importing this cotresnet; their output is this process's."""
    import cotresnet

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(cotresnet.__file__).parent.parent),
                                                         *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = []
    for r in range(1, ranks.world):
        place = asdict(ranks) | {"rank": r, "local_rank": r}
        out.append(subprocess.Popen([sys.executable, "-m", "cotresnet.job.follow", json.dumps(place)], env=env))
    return out


def stop_followers(followers: List[subprocess.Popen], grace: float = 60.0) -> None:
    """Wait for the ranks rank 0 started (they end with the job), then end any that did not, by pid."""
    import time

    deadline = time.monotonic() + grace
    for p in followers:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("rank process %d did not end with its job: killed", p.pid)
            p.kill()
            p.wait()
        if p.returncode:
            log.error("rank process %d exited with status %d", p.pid, p.returncode)
