"""The network of one rank (docs/math.md, "Many processes"): particle shard p of every layer (M / S particles)
and sample shard q. The layer's mean field is the sum of the shards' partial sums, completed by one all-reduce of
an (N_q, d) tensor per layer (`ParticleSum`); the rank's risk is its samples' part of the full-batch risk, so
that the data group's gradients add up to the full batch's whatever the shard sizes."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

from torch import Tensor

from ..config.layout import shard
from ..model.euler import layer_preactivation
from ..model.layered import MeanFieldResNet
from ..model.spec import NetworkSpec, Particles
from .comm import Comm, ParticleSum, data_total


def shard_particles(particles: Particles, p: int, S: int) -> Particles:
    """Shard p of S of every layer's particles: {u, w: (L, M / S, d), b: (L, M / S)} (copies)."""
    M = particles["b"].shape[-1]
    start, stop = shard(M, S, p)
    return {k: v[:, start:stop].clone() for k, v in particles.items()}


def gather_particles(particles: Particles, comm: Comm) -> Optional[Particles]:
    """Every shard's particles concatenated in rank order, {u, w: (L, M, d), b: (L, M)}, on the group's rank 0;
    None on the others."""
    out = {k: comm.gather(v.detach(), 1) for k, v in particles.items()}
    return None if out["u"] is None else out


def sample_shard(dataset, q: int, D: int):
    """Training samples [start, stop) of shard q of D (sizes differ by at most one); the test set stays whole."""
    start, stop = shard(dataset.n_train, D, q)
    return replace(dataset, x_train=dataset.x_train[start:stop], y_train=dataset.y_train[start:stop])


class ShardedResNet(MeanFieldResNet):
    """One rank's shard of the flow of a MeanFieldResNet whose spec has M particles per layer and N samples.

    Parameters u, w: (L, M / S, d), b: (L, M / S) (this rank's particles); buffers as MeanFieldResNet's. The
    spec keeps the whole network's M, so that 1/(L M), the learning rate L M dt and G = L M |grad|^2 are the
    flow's. `particles` completes each layer's sum (S ranks), `data` sums the rank's samples' risks (D ranks).
    """

    def __init__(self, particles: Particles, spec: NetworkSpec, embedding: Tensor, readout: Tensor,
                 particle_comm: Comm, data_comm: Comm, n_samples: int):
        super().__init__(particles, replace(spec, M=spec.M // particle_comm.size), embedding, readout)
        self.spec = spec
        self.particle_sum = ParticleSum(particle_comm, spec.M)
        self.data_comm, self.n_samples = data_comm, n_samples
        if data_comm.size > 1:  # dopri5 controls the error of the whole batch's state, as one process does
            self.ode_options = {"norm": self._rms_norm}

    def field(self, l: int, x: Tensor) -> Tensor:
        """F_l(x) = (1/M) sum over every shard's particles of u_m sigma(w_m . x + b_m): (N_q, d) -> (N_q, d)."""
        ps = self.particle_sum
        return ps.total(self.sigma(layer_preactivation(ps.enter(x), self.w, self.b, l)) @ self.u[l]) / self.M

    def risk(self, x: Tensor, y: Tensor) -> Tensor:
        """This rank's part (1/N) sum over its samples i of 1/2 |R X_1(x_i) - y_i|^2, N the samples of all shards."""
        return 0.5 * (self(x) - y).pow(2).sum() / self.n_samples

    def _rms_norm(self, t: Tensor) -> Tensor:
        """torchdiffeq's error norm sqrt(mean |t|^2) over the whole batch's state, from this rank's rows of it."""
        total = data_total(t.abs().pow(2).sum().reshape(1), self.data_comm)
        return (total / (self.n_samples * t.shape[-1])).sqrt().reshape(())

    def gathered(self) -> Optional[MeanFieldResNet]:
        """The whole network (every shard's particles, detached copies) on the particle group's rank 0, else None."""
        p = gather_particles({k: getattr(self, k) for k in "uwb"}, self.particle_sum.comm)
        if p is None:
            return None
        return MeanFieldResNet(p, self.spec, self.embedding.detach().clone(), self.readout.detach().clone())
