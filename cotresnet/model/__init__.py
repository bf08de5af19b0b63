"""The network: particles theta = (u, w, b) of L layers x M particles, the layered mean-field ResNet and its
integrators, depth-mobile particles, replicas stepped as one network. torch, no Lightning."""
from .build import build_network, network_from_meta, student_network
from .layered import MeanFieldResNet, layer_boundaries, layer_index
from .particles import embedding_matrix, init_particles, readout_matrix
from .spec import NetworkSpec, Particles, check_shapes

__all__ = ["NetworkSpec", "Particles", "MeanFieldResNet", "build_network", "network_from_meta", "student_network",
           "init_particles", "embedding_matrix", "readout_matrix", "layer_boundaries", "layer_index", "check_shapes"]
