"""Intra-op threads fitted to the CPUs a job really has and to its size (docs: README "Shared machines").

PyTorch's default sizes its OpenMP pool to the machine, and pools of several processes spin against
each other on shared cores (10-250x slowdowns measured on 2 cores). A job gets at most the CPUs of its
affinity mask, of its SLURM allocation (SLURM_CPUS_PER_TASK) and of a parallel launcher's share
(OMP_NUM_THREADS, which joblib's workers set), and one thread while its matmuls are too small to share.
"""
from __future__ import annotations

import os

# per-layer multiply-adds (N x M x d, all replicas) below which a step is launch-bound: measured on the
# 2-core machine, the default job (256 x 128 x 8) runs as fast on one thread as on two
SMALL_WORK = 1 << 22


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, SLURM allocation, a launcher's OMP_NUM_THREADS."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            n = min(n, int(value))
    return max(n, 1)


def auto_threads(n_samples: int, M: int, d: int, replicas: int = 1) -> int:
    """The default trainer.threads: one thread for a launch-bound step, else every available CPU."""
    return 1 if n_samples * M * d * replicas < SMALL_WORK else available_cpus()


def configure(requested, n_samples: int, M: int, d: int, replicas: int = 1, ranks_per_node: int = 1) -> int:
    """Set torch's intra-op threads (trainer.threads, or the automatic choice), at most the CPUs this process
    may use (more spin against each other and against every other process on the machine: trainer.threads
    = 10000 started 20,000 threads and a load of 3,584 on a shared machine); returns the count. The ranks of a
    job on one node share its CPUs: each gets cpus // ranks (Lightning's rule for its DDP processes); n_samples
    and M are this rank's."""
    import logging

    import torch

    cpus = max(1, available_cpus() // ranks_per_node)
    n = requested or auto_threads(n_samples, M, d, replicas)
    if n > cpus:
        logging.getLogger("cotresnet").warning(
            "trainer.threads=%d lowered to %d: the CPUs this process may use (affinity mask, SLURM allocation, "
            "launcher share, divided among the job's ranks on this node)", n, cpus)
        n = cpus
    torch.set_num_threads(n)
    return n
