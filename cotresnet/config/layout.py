"""Where a job's ranks sit (docs/math.md, "Many processes"): ranks = D data groups x S particle shards.

Rank r holds particle shard p = r mod S of every layer (M / S particles) and sample shard q = r div S. The S ranks
of one data group (consecutive ranks: one node's, where the per-layer all-reduce is cheapest) complete each
layer's sum over particles; the D ranks holding one particle shard sum their samples' gradients. No torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

LAYOUT_KEYS = ("trainer.devices", "trainer.num_nodes", "trainer.particle_parallel")


@dataclass(frozen=True)
class Layout:
    """`ranks` processes, `S` of them sharing each layer's particles; D = ranks / S data groups."""

    ranks: int = 1
    S: int = 1

    @classmethod
    def of(cls, cfg) -> Layout:
        t = cfg.trainer
        return cls(t.devices * t.num_nodes, t.particle_parallel)

    @property
    def D(self) -> int:
        return self.ranks // self.S

    @property
    def parallel(self) -> bool:
        return self.ranks > 1

    def coords(self, rank: int) -> Tuple[int, int]:
        """(q, p): the data group and the particle shard of a rank."""
        return divmod(rank, self.S)

    def particle_group(self, q: int) -> List[int]:
        """The ranks of data group q, which share its samples and complete each layer's sum over particles."""
        return list(range(q * self.S, (q + 1) * self.S))

    def data_group(self, p: int) -> List[int]:
        """The ranks holding particle shard p, one per data group: their gradients sum to the full batch's."""
        return list(range(p, self.ranks, self.S))


def shard(n: int, parts: int, i: int) -> Tuple[int, int]:
    """[start, stop) of part i when n items are cut into `parts` contiguous parts whose sizes differ by at most
    one (the first n mod parts are one longer), as torch.tensor_split cuts them."""
    size, extra = divmod(n, parts)
    start = i * size + min(i, extra)
    return start, start + size + (i < extra)


def layout_keys(cfg) -> Dict[str, int]:
    """The keys that fix a job's layout, as a checkpoint records them (a resume must keep them)."""
    t = cfg.trainer
    return {"trainer.devices": t.devices, "trainer.num_nodes": t.num_nodes,
            "trainer.particle_parallel": t.particle_parallel}
