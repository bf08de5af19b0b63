"""One flow on many processes (docs/math.md, "Many processes"): the collectives the flow needs over groups of ranks,
and the network of one rank, which holds a shard of every layer's particles and of the samples. torch, no
Lightning; the ranks are started and joined by job.launch."""
from .comm import Comm, ParticleSum, RankGroups, rank_groups
from .sharded import ShardedResNet, gather_particles, sample_shard, shard_particles

__all__ = ["Comm", "ParticleSum", "RankGroups", "rank_groups", "ShardedResNet", "gather_particles", "sample_shard",
           "shard_particles"]
