"""The arithmetic of scripts/bench_parallel.py's GPU projection (README "Many processes"): the memory bound it
solves is the largest that fits, the all-reduce model's terms, the layouts it picks."""
import math

import bench_parallel as B


def test_largest_is_the_most_particles_that_fit():
    for N, gpus in [(1024, 8), (8192, 64), (64, 512)]:
        M, S, D = B.largest(N, 16, 64, gpus)
        assert S * D == gpus and M % S == 0
        assert B.gpu_memory(N, 16, 64, M, S, D) <= B.GPU["memory"] < B.gpu_memory(N, 16, 64, M + S, S, D)
        for s in (2 ** k for k in range(int(math.log2(gpus)) + 1)):  # no layout holds a multiple of its S above M
            assert B.gpu_memory(N, 16, 64, (M // s + 1) * s, s, gpus // s) > B.GPU["memory"]


def test_allreduce_model():
    g = B.GPU
    assert B.allreduce_time(1 << 30, 1) == 0
    inside = B.allreduce_time(1 << 30, 8, 1)
    assert math.isclose(inside, g["lat_node"] + 2 * 7 / 8 * (1 << 30) / g["busbw_node"])
    assert B.allreduce_time(1 << 30, 16, 2) > inside
    # a particle group is consecutive ranks, a data group strided by S
    assert B.group_nodes(8, 1) == 1 and B.group_nodes(64, 1) == 8
    assert B.group_nodes(4, 2) == 1 and B.group_nodes(8, 8) == 8 and B.group_nodes(8, 16) == 8


def test_projection_picks_a_fitting_layout_and_refuses_when_none_fits():
    step, S, D, eff, comm, gb = B.project(1024, 16, 64, 2 ** 24, 64)
    assert S * D == 64 and gb * 1e9 <= B.GPU["memory"] and 0 < eff <= 1 and 0 < comm < step
    assert B.project(8192, 16, 64, 2 ** 24, 8) is None
    # few particles, many samples: the samples split (the gradient all-reduce is small)
    _, S, D, *_ = B.project(2 ** 20, 16, 8, 64, 8)
    assert D > 1
