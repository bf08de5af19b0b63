"""Many processes (README "Many processes"): what the two 2-process layouts cost on this machine, the per-layer
compute and all-reduce times they are made of, and the step of (L, M) = (64, 2^24) projected onto GPUs.

    python scripts/bench_parallel.py [--quick] [--json bench_parallel.json]

Rows (value, baseline, ratio):
  particle_parallel_2v1  a framework step with trainer.devices=2 trainer.particle_parallel=2 / the same job in one
                         process, at a size where the step dominates; each job gets the machine's CPUs (one
                         process: all threads; two ranks: cpus / 2 each)
  data_parallel_2v1      the same with trainer.devices=2 (two sample shards) / one process
  layer_compute          one layer's forward and backward, N x M/2 x d on one thread (seconds)
  layer_allreduce        one all-reduce of the (N, d) field between 2 gloo processes (seconds)
  grad_allreduce         one all-reduce of the particles' gradient over the 2 data groups, (2d + 1) L M numbers (s)
Then gloo's latency and bandwidth (all-reduces of 2^4..2^22 floats), each 2-rank step as the cost model predicts it
from the per-layer times (L layers' compute + the all-reduces, no overlap) beside the measured one, and the model
applied to (L, M) = (64, 2^24) on 8, 64 and 512 H100s with published NVLink / InfiniBand / NCCL figures (GPU below:
assumptions, not measured), with the largest L x M each GPU count holds.
A step time is the difference of two runs' wall times (summary.json's wall_time_s, 4 and 44 steps) over their
difference in steps, start-up and final files cancelling, from the fastest of interleaved repeats of each (this
machine is shared: other processes only ever slow a run down).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the bench size: N d L M, float32; the step (12 N M d L multiply-adds) dominates the all-reduces (N d per layer)
SIZE = {"N": 2048, "d": 16, "L": 8, "M": 4096}


def job_args(size, steps):
    return [f"data.n_train={size['N']}", "data.n_test=64", f"model.d={size['d']}", f"model.L={size['L']}",
            f"model.M={size['M']}", f"trainer.max_steps={steps}", "trainer.log_every=1000000", "trainer.converge_ratio=0",
            "callbacks.kernel_every=0", "callbacks.ot_every=0", "plots=[]", "trainer.progress=none"]


def wall(layout, size, steps) -> float:
    """wall_time_s of a job of `steps` steps in `layout` (overrides), through cotresnet-train."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each job fits its own threads
        env["PYTHONPATH"] = str(ROOT)
        subprocess.run([sys.executable, "-m", "cotresnet.train", *job_args(size, steps), *layout,
                        f"hydra.run.dir={tmp}/run"], check=True, capture_output=True, cwd=tmp, env=env)
        return json.loads((Path(tmp) / "run" / "summary.json").read_text())["wall_time_s"]


def framework_steps(size, repeats, short=4, long=44):
    """Seconds per framework step: one process, S = 2, D = 2: (the fastest long run - the fastest short run) /
    their difference in steps, over interleaved repeats (other processes only ever slow a run down); every wall
    time in `walls`."""
    layouts = {"one": [], "particles": ["trainer.devices=2", "trainer.particle_parallel=2"],
               "samples": ["trainer.devices=2"]}
    walls = {k: [] for k in layouts}
    for _ in range(repeats):
        for name, layout in layouts.items():
            walls[name].append((wall(layout, size, short), wall(layout, size, long)))
    step = {k: (min(b for _, b in v) - min(a for a, _ in v)) / (long - short) for k, v in walls.items()}
    return step, {"short": short, "long": long, **walls}


def _rank(rank, size, port, out, reps):
    """One of two gloo processes: the (N, d) all-reduce, a shard's gradient all-reduce, and all-reduces of 2^k
    floats (latency and bandwidth), timed."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    N, d, L, M = size["N"], size["d"], size["L"], size["M"]
    named = (("layer_allreduce", N * d), ("grad_allreduce", (2 * d + 1) * L * M))
    times, curve = {}, {}
    for name, n in (*named, *((2 ** k, 2 ** k) for k in (4, 8, 12, 16, 20, 22))):
        t = torch.randn(n)
        for _ in range(3):
            dist.all_reduce(t)
        dist.barrier()
        t0 = time.perf_counter()
        k = reps if n <= 2 ** 20 else max(3, reps // 10)
        for _ in range(k):
            dist.all_reduce(t)
        (times if isinstance(name, str) else curve)[name] = (time.perf_counter() - t0) / k
    if rank == 0:
        Path(out).write_text(json.dumps({**times, "curve": curve}))
    dist.destroy_process_group()


def fit_alpha_beta(curve):
    """(latency s, bus bandwidth bytes/s) of gloo between 2 processes: the latency is the all-reduce of the fewest
    floats, the bandwidth the slope between the two largest (t = latency + 2 (P - 1)/P bytes / busbw, P = 2)."""
    sizes = sorted(curve, key=int)
    (n1, t1), (n2, t2) = [(4 * int(n), curve[n]) for n in sizes[-2:]]
    return curve[sizes[0]], (n2 - n1) / max(t2 - t1, 1e-12)


def layer_times(size, reps):
    """{layer_compute, layer_allreduce, grad_allreduce} seconds, measured here."""
    import socket

    import torch
    import torch.multiprocessing as mp

    from cotresnet.model.layered import MeanFieldResNet
    from cotresnet.model.particles import embedding_matrix, init_particles, readout_matrix
    from cotresnet.model.spec import NetworkSpec

    N, d, L, M = size["N"], size["d"], size["L"], size["M"] // 2
    torch.set_num_threads(1)
    spec = NetworkSpec(L=L, M=M, d=d, d_in=d, d_out=d)
    net = MeanFieldResNet(init_particles(L, M, d, seed=0), spec, embedding_matrix("pad", d, d, 0),
                          readout_matrix("first", d, d, 0))
    x, y = torch.randn(N, d), torch.randn(N, d)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        net.risk(x, y).backward()
        best = min(best, time.perf_counter() - t0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank, args=(size, port, f"{tmp}/t.json", 50), nprocs=2)
        times = json.loads(Path(f"{tmp}/t.json").read_text())
    latency, busbw = fit_alpha_beta(times["curve"])
    return {"layer_compute": best / L, **times, "gloo_latency": latency, "gloo_busbw": busbw}


# Projection inputs. Published figures, not measured here (no GPU was lent to this task):
# - NCCL all-reduce on H100 SXM: bus bandwidth ~360 GB/s within a node (NVLink 4 through NVSwitch), ~45 GB/s per GPU
#   across nodes (one 400 Gb/s NDR InfiniBand port per GPU); latency of a small all-reduce ~15 us in a node,
#   ~30 us + 10 us per doubling of the nodes across them (nccl-tests all_reduce_perf orders of magnitude).
# - H100 SXM HBM3: 3.35 TB/s. The layer is bound by passes over its (N, M/S) activations (inner dimension d is
#   small): the per-element time comes from this repository's one GPU measurement (README "Scale": H200,
#   0.142 s a recompute step at (8192, 64, 64, 16384)), scaled by the H200 / H100 bandwidths (4.8 / 3.35).
GPU = {"busbw_node": 360e9, "busbw_net": 45e9, "lat_node": 15e-6, "lat_net": 30e-6, "lat_doubling": 10e-6,
       "per_element": 0.142 / (64 * 8192 * 16384) * 4.8 / 3.35, "memory": 80e9, "gpus_per_node": 8}


def allreduce_time(nbytes, ranks, nodes=1, g=GPU):
    """NCCL ring all-reduce of nbytes over `ranks` GPUs spread over `nodes` nodes."""
    if ranks == 1:
        return 0.0
    latency = g["lat_node"] if nodes == 1 else g["lat_net"] + g["lat_doubling"] * math.log2(nodes)
    return latency + 2 * (ranks - 1) / ranks * nbytes / (g["busbw_node"] if nodes == 1 else g["busbw_net"])


def group_nodes(ranks, stride, g=GPU):
    """The nodes a group of `ranks` ranks `stride` apart spans (ranks fill nodes in order): a particle group is
    consecutive (stride 1), a data group strided by S (config/layout.py)."""
    per_node = max(1, g["gpus_per_node"] // stride)
    return math.ceil(ranks / per_node)


def gpu_memory(N, d, L, M, S, D):
    """Bytes on one GPU, float32, model.backprop=recompute: particles and gradients, initial particles (the rows'
    distances), 3 (N/D, M/S) layer temporaries, the L + 1 states and their adjoint."""
    n, m = math.ceil(N / D), M / S
    return 4 * (3 * (2 * d + 1) * L * m + 3 * n * m + 2 * (L + 1) * n * d)


def project(N, d, L, M, gpus, g=GPU):
    """The fastest layout (S, D) of `gpus` that fits: (step s, S, D, efficiency, communication s, GB per GPU),
    efficiency = one GPU's compute of the whole step / (gpus x step); None if none fits. No overlap of
    communication with compute is assumed (pessimistic)."""
    best = None
    for S in (2 ** k for k in range(int(math.log2(gpus)) + 1)):
        D = gpus // S
        mem = gpu_memory(N, d, L, M, S, D)
        if mem > g["memory"] or M % S:
            continue
        # the layer passes over its (N/D, M/S) activations whatever d is (d = 64 measured: an upper bound at d = 16)
        compute = L * g["per_element"] * math.ceil(N / D) * (M / S)
        # per layer one (N/D, d) all-reduce forward and one backward over the S ranks of a particle group (one
        # node's while S <= 8), then the particle gradients (2d + 1) L M / S over the D ranks of a data group, and
        # two collectives of a few numbers over the world (the step's risk and G; what a signal asked)
        comm = (2 * L * allreduce_time(4 * math.ceil(N / D) * d, S, group_nodes(S, 1, g), g)
                + allreduce_time(4 * (2 * d + 1) * L * M / S, D, group_nodes(D, S, g), g)
                + 2 * allreduce_time(32, gpus, group_nodes(gpus, 1, g), g))
        step = compute + comm
        if best is None or step < best[0]:
            best = (step, S, D, L * g["per_element"] * N * M / (gpus * step), comm, mem / 1e9)
    return best


def largest(N, d, L, gpus, g=GPU):
    """(M, S, D): the most particles per layer that `gpus` GPUs hold in some layout, M a multiple of S (the memory
    is linear in M / S: solved, not searched)."""
    best = (0, 1, gpus)
    for S in (2 ** k for k in range(int(math.log2(gpus)) + 1)):
        D, n = gpus // S, math.ceil(N / (gpus // S))
        m = int((g["memory"] / 4 - 2 * (L + 1) * n * d) // (3 * (2 * d + 1) * L + 3 * n))
        while m > 0 and gpu_memory(N, d, L, S * m, S, D) > g["memory"]:  # floats: stay on the safe side
            m -= 1
        if S * m > best[0]:
            best = (S * m, S, D)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("bench_parallel.json"))
    args = ap.parse_args(argv)
    rows = []

    def row(name, size, value, base, unit="s/step"):
        rows.append({"row": name, "size": size, "value": value, "baseline": base, "ratio": value / base, "unit": unit})
        print(f"{name:32s} {size:26s} {value:12.4g} {base:12.4g} {value / base:8.3f}", flush=True)

    t, walls = parallel_rows(row, args)
    size = str(tuple(SIZE.values()))
    layer = layer_times(SIZE, 3 if args.quick else 10)
    for k in ("layer_compute", "layer_allreduce", "grad_allreduce"):
        row(k, size, layer[k], layer["layer_compute"], unit="s")
    print(f"gloo between 2 processes here: latency {layer['gloo_latency'] * 1e6:.0f} us, bus bandwidth "
          f"{layer['gloo_busbw'] / 1e9:.2f} GB/s (all-reduces of 2^4 and 2^20..2^22 floats)")
    # the model the projection uses, checked on this machine: a rank's step = L x (its layer's compute) + its
    # all-reduces (2 L of the (N, d) field with S = 2; the gradient once with D = 2), no overlap
    L = SIZE["L"]
    model = {"particles": L * layer["layer_compute"] + 2 * L * layer["layer_allreduce"],
             "samples": L * layer["layer_compute"] + layer["grad_allreduce"]}
    for k, name in (("particles", "particle"), ("samples", "data")):
        print(f"{name}-parallel step: the model {model[k]:.4f} s (compute {L * layer['layer_compute']:.4f} s, "
              f"all-reduces {model[k] - L * layer['layer_compute']:.4f} s), measured {t[k]:.4f} s")
    print("\nprojected step of (L, M) = (64, 2^24), d = 16, float32, model.backprop=recompute (H100 and NCCL figures "
          "published or scaled, not measured: no GPU was lent to this session):")
    print(f"{'N':>6s} {'GPUs':>5s} {'S':>5s} {'D':>4s} {'GB/GPU':>7s} {'step s':>9s} {'comm s':>8s} {'efficiency':>10s}"
          f" {'largest L x M':>14s} {'(S, D)':>10s}")
    table = []
    for N in (1024, 8192):
        for gpus in (8, 64, 512):
            p = project(N, 16, 64, 2**24, gpus)
            M, S, D = largest(N, 16, 64, gpus)
            table.append({"N": N, "gpus": gpus, "fits": p is not None, "step_s": p and p[0], "S": p and p[1],
                          "D": p and p[2], "efficiency": p and p[3], "comm_s": p and p[4], "gb_per_gpu": p and p[5],
                          "largest_LM": 64 * M, "largest_S": S, "largest_D": D})
            fit = (f"{p[1]:5d} {p[2]:4d} {p[5]:7.1f} {p[0]:9.3g} {p[4]:8.2g} {p[3]:10.3f}" if p
                   else f"{'does not fit':>47s}")
            print(f"{N:6d} {gpus:5d} {fit} {64 * M:14.3g} {str((S, D)):>10s}")
    args.json.write_text(json.dumps({"size": SIZE, "rows": rows, "layer": layer, "steps": t, "walls": walls, "model_step": model,
                                     "projection": table, "gpu_inputs": GPU}, indent=2))
    print(f"wrote {args.json}")


def parallel_rows(row, args) -> tuple:
    """particle_parallel_2v1 and data_parallel_2v1 (framework steps, this machine); (the steps (s), wall times)."""
    t, walls = framework_steps(SIZE, 1 if args.quick else 3)
    size = str(tuple(SIZE.values()))
    row("particle_parallel_2v1", size, t["particles"], t["one"])
    row("data_parallel_2v1", size, t["samples"], t["one"])
    return t, walls


if __name__ == "__main__":
    main()
