"""Networks from their parts: the layered or the depth-mobile network of a spec, the student a training config
trains, and a network rebuilt from a particles.pt entry."""
from __future__ import annotations

from torch import Tensor

from .depth import DepthMobileResNet, with_grid_depths
from .layered import MeanFieldResNet
from .particles import embedding_matrix, init_particles, readout_matrix
from .spec import NetworkSpec, Particles


def build_network(particles: Particles, spec: NetworkSpec, embedding: Tensor, readout: Tensor):
    """The network of a spec: the layered MeanFieldResNet, or DepthMobileResNet when the spec names
    a depth kernel (its particles then carry depths s: (L, M))."""
    if spec.depth_kernel is None:
        return MeanFieldResNet(particles, spec, embedding, readout)
    return DepthMobileResNet(particles, spec, embedding, readout)


def student_network(cfg, d_in: int, d_out: int):
    """The network a training config trains, with its initial particles (depths on the layer grid)."""
    spec = NetworkSpec.from_config(cfg, d_in, d_out)
    i, dtype = cfg.init, spec.torch_dtype
    particles = init_particles(spec.L, spec.M, spec.d, scheme=i.scheme, scale_u=i.scale_u, scale_w=i.scale_w,
                               scale_b=i.scale_b, seed=cfg.seed, dtype=dtype)
    if spec.depth_kernel is not None:
        particles = with_grid_depths(particles)
    return build_network(particles, spec, embedding_matrix(spec.embedding_kind, spec.d, d_in, cfg.seed, dtype),
                         readout_matrix(spec.readout_kind, spec.d, d_out, cfg.seed, dtype))


def network_from_meta(particles: Particles, meta: dict):
    """Rebuild a network from a particles.pt entry ({u, w, b[, s]}) and its meta, in the spec's dtype."""
    spec = NetworkSpec.from_meta(meta)
    cast = lambda t: t.detach().to(spec.torch_dtype, copy=True)
    return build_network({k: cast(v) for k, v in particles.items()}, spec, cast(meta["embedding"]),
                         cast(meta["readout"]))
