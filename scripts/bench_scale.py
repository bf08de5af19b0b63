"""Cost curves: one training step, one kernel evaluation and one W_COT evaluation across N, L and M, their
log-log exponents, and the share of the default diagnostic cadences in a training run at each size.

    python scripts/bench_scale.py [--gpu] [--quick] [--backprop recompute] [--json F] [--png F]

Axes vary one of (N, L, M) from the base size (N, d, L, M) = (256, 16, 64, 16384) on the CPU (the
million-particle job), (8192, 64, 64, 16384) on a GPU; `n_probe` varies the kernel's samples at a small
network, across spectra.EIGH_MAX_DIM (eigh below, shift-invert and Lanczos quadrature above).
  step      one full-batch SGD step (zero_grad, risk, backward, step), float32, model.backprop as given;
            `matmuls`: the same layer matmuls run bare (bench.py's time_matmuls)
  kernel    diagnostics.kernel_diagnostics on the first n = min(N, 2048 / d_out) samples (float64)
  distance  diagnostics.distances(moved, init), particles moved along the COT velocity to an rms
            displacement of 0.5 (what 300 steps of the million job give: 0.49)
  share     (kernel + distance) / (500 steps + kernel + distance): the default cadences (500 steps)
With --gpu, first the job-shaped run at the base size (`gpu_run`): 1000 SGD steps of the flow (dt 0.1,
TF32 matmuls as trainer=gpu), the kernels and W_COT(trained, init) once; `job_s` counts the default
cadence's three evaluations (steps 0, 500, 1000). --deadline S skips the rows that would start after S
seconds (they are listed as skipped); the JSON is rewritten after every row.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import sync, time_matmuls, time_sgd  # noqa: E402

from cotresnet import diagnostics as D  # noqa: E402
from cotresnet.model.layered import MeanFieldResNet  # noqa: E402
from cotresnet.model.particles import embedding_matrix, init_particles, readout_matrix  # noqa: E402
from cotresnet.model.spec import NetworkSpec  # noqa: E402
from cotresnet.record import learning_rate  # noqa: E402

D_IN, D_OUT, CADENCE = 4, 2, 500  # the teacher task's dimensions; callbacks' default kernel_every = ot_every


def make(N, d, L, M, device, backprop):
    """The job's network (float32, tanh) and N teacher-like samples."""
    spec = NetworkSpec(L=L, M=M, d=d, d_in=D_IN, d_out=D_OUT, backprop=backprop, dtype="float32")
    net = MeanFieldResNet(init_particles(L, M, d, seed=0, dtype=torch.float32), spec,
                          embedding_matrix("pad", d, D_IN, 0, torch.float32),
                          readout_matrix("first", d, D_OUT, 0, torch.float32)).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, D_IN, generator=g)
    return net, x.to(device), torch.tanh(2 * x[:, :D_OUT]).to(device)


def moved(net, x, y, rms=0.5):
    """The particles after a move along the COT velocity -L M grad(risk), scaled to an rms displacement."""
    grads = torch.autograd.grad(net.risk(x, y), [net.u, net.w, net.b])
    flat = torch.cat([g.reshape(net.L, net.M, -1) if g.dim() == 3 else g[..., None] for g in grads], -1)
    step = rms / flat.pow(2).sum(-1).mean().sqrt().item()
    return {k: (p - step * g).detach() for (k, p), g in zip(net.particles().items(), grads)}


def timed(fn, device, repeats):
    """(best seconds over `repeats` calls, the last result)."""
    best, out = math.inf, None
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def measure(N, d, L, M, device, args, parts=("step", "kernel", "distance")):
    """One row: seconds of each part at this size (the best of a few, one at the largest sizes). The
    kernels take min(N, 2048 / d_out) samples (the default kernel_max_dim), all N on the n_probe axis."""
    net, x, y = make(N, d, L, M, device, args.backprop)
    big = N * L * M >= 2**27 or N >= 2048
    repeats = 1 if big or args.quick else 3
    n = N if parts == ("kernel",) else min(N, 2048 // D_OUT)
    row = {"N": N, "d": d, "L": L, "M": M, "n_kernel": n}
    if "step" in parts:
        row["step_s"] = min(time_sgd(net, lambda m: m.risk(x, y), 1, device, warmup=1) for _ in range(repeats))
        row["matmuls_s"] = time_matmuls(N, d, L, M, device, 1)
    if "kernel" in parts:
        row["kernel_s"], kd = timed(lambda: D.kernel_diagnostics(net, x[:n], y[:n]), device, repeats)
        row.update(lambda_min=kd.lambda_min.value, lambda_min_resolution=kd.lambda_min.resolution,
                   share_resolution=kd.spectrum.share_resolution)
    if "distance" in parts:
        now, init = moved(net, x, y), net.particles()
        row["distance_s"], dist = timed(lambda: D.distances(now, init), device, repeats)
        row.update(cot_lower=dist["cot_dist_init_lower"], cot_upper=dist["cot_dist_init_upper"],
                   cot_rel_width=dist["cot_dist_init_rel_width"])
    if {"step", "kernel", "distance"} <= set(parts):
        diag = row["kernel_s"] + row["distance_s"]
        row["cadence_share"] = diag / (CADENCE * row["step_s"] + diag)
    return row


def exponent(rows, axis, key):
    """Least-squares slope of log(seconds) against log(size)."""
    pts = [(r[axis], r[key]) for r in rows if key in r and r[key] > 0]
    if len(pts) < 2:
        return None
    return float(np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0])


def axes(gpu: bool, quick: bool):
    """{axis: sizes (N, d, L, M)} around the base size; `n_probe` varies the kernel's samples only."""
    N, d, L, M = (8192, 64, 64, 16384) if gpu else (256, 16, 64, 16384)
    if quick:
        N, L, M = N // 4, L // 4, M // 16
    out = {"M": [(N, d, L, M >> k) for k in range(4, -1, -1)],
           "L": [(N, d, L >> k, M) for k in range(3, -1, -1)],
           "N": [(N >> k, d, L, M) for k in range(3, -1, -1)]}
    out["n_probe"] = [(n, d, 4, 1024) for n in ((256, 512, 1024, 2048) if quick else (512, 1024, 2048, 4096))]
    return out


def plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["axes"])
    fig, axs = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6))
    for ax, name in zip(axs, names):
        rows = result["axes"][name]
        key = "n_kernel" if name == "n_probe" else name
        for part in ("step_s", "kernel_s", "distance_s"):
            pts = [(r[key], r[part]) for r in rows if part in r]
            if pts:
                slope = result["exponents"][name].get(part)
                ax.loglog(*zip(*pts), "o-", label=part[:-2] + (f" (slope {slope:.2f})" if slope is not None else ""))
        ax.set_xlabel(key)
        ax.set_ylabel("seconds")
        ax.set_title(f"varying {key}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def gpu_run(device, args) -> dict:
    """The GPU target as a job runs it: 1000 steps of the flow trained in place at the base size, then the
    kernels and W_COT(trained, init) once (seconds each); job_s = steps + 3 evaluations (the default cadence)."""
    N, d, L, M = 8192, 64, 64, 16384
    net, x, y = make(N, d, L, M, device, args.backprop)
    init = net.particles()
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate(0.1, L, M, "mean_field"))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = net.risk(x, y)
        loss.backward()
        opt.step()
        return loss

    risk0 = step().item()  # the first step (allocations, kernels' autotuning) is timed apart
    sync(device)
    t0 = time.perf_counter()
    for _ in range(999):
        loss = step()
    sync(device)
    steps = (time.perf_counter() - t0) * 1000 / 999
    n = min(N, 2048 // D_OUT)
    kernel, kd = timed(lambda: D.kernel_diagnostics(net, x[:n], y[:n]), device, 1)
    distance, dist = timed(lambda: D.distances(net.particles(), init), device, 1)
    return {"size": [N, d, L, M], "backprop": args.backprop, "risk_first": risk0, "risk_last": loss.item(),
            "steps_1000_s": steps, "step_s": steps / 1000, "matmuls_s": time_matmuls(N, d, L, M, device, 3),
            "kernel_s": kernel, "distance_s": distance, "job_s": steps + 3 * (kernel + distance),
            "lambda_min": kd.lambda_min.value, "lambda_min_resolution": kd.lambda_min.resolution,
            "cot_lower": dist["cot_dist_init_lower"], "cot_upper": dist["cot_dist_init_upper"],
            "cot_rel_width": dist["cot_dist_init_rel_width"], "peak_memory_bytes": torch.cuda.max_memory_allocated()}


def table(result) -> None:
    print(f"{'axis':8s} {'(N, d, L, M)':26s} {'n':>5s} {'step s':>9s} {'step/mm':>8s} {'kernel s':>9s} "
          f"{'dist s':>8s} {'W rel width':>11s} {'cadence share':>13s}")
    cell = lambda v, width, spec: f"{v:{width}{spec}}" if v is not None else f"{'-':>{width}}"
    for name, rows in result["axes"].items():
        for r in rows:
            ratio = r["step_s"] / r["matmuls_s"] if "step_s" in r else None
            print(f"{name:8s} {str((r['N'], r['d'], r['L'], r['M'])):26s} {r['n_kernel']:5d} "
                  f"{cell(r.get('step_s'), 9, '.3g')} {cell(ratio, 8, '.2f')} {cell(r.get('kernel_s'), 9, '.3g')} "
                  f"{cell(r.get('distance_s'), 8, '.3g')} {cell(r.get('cot_rel_width'), 11, '.2g')} "
                  f"{cell(r.get('cadence_share'), 13, '.3f')}", flush=True)
        print(f"{'':8s} exponents: " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in result["exponents"][name].items()
                                                if v is not None))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="cuda:0, GPU-sized axes, and the 1000-step run first")
    ap.add_argument("--quick", action="store_true", help="smaller axes (a smoke run)")
    ap.add_argument("--backprop", default="fused", choices=("fused", "recompute", "autograd"))
    ap.add_argument("--deadline", type=float, default=math.inf, help="seconds after which no row starts")
    ap.add_argument("--json", type=Path, default=Path("bench_scale.json"))
    ap.add_argument("--png", type=Path, default=Path("bench_scale.png"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    device = torch.device("cuda:0" if args.gpu else "cpu")
    what = torch.cuda.get_device_name(0) if args.gpu else f"{torch.get_num_threads()} CPU threads"
    print(f"device: {device} ({what}), backprop={args.backprop}", flush=True)
    result = {"device": what, "threads": torch.get_num_threads(), "backprop": args.backprop, "axes": {},
              "exponents": {}, "skipped": []}
    save = lambda: args.json.write_text(json.dumps(result, indent=2))
    if args.gpu:
        torch.set_float32_matmul_precision("high")  # what trainer=gpu sets
        result["gpu_run"] = gpu_run(device, args)
        print("gpu run:", result["gpu_run"], flush=True)
        save()
    done = {}
    for name, sizes in axes(args.gpu, args.quick).items():
        parts = ("kernel",) if name == "n_probe" else ("step", "kernel", "distance")
        rows = []
        for size in sizes:
            key = (size, parts)
            if key not in done and time.perf_counter() - start > args.deadline:
                result["skipped"].append([name, *size])
                continue
            if key not in done:  # the base size is on every axis: measured once
                done[key] = measure(*size, device, args, parts)
                print(f"  measured {name} {size}: " + ", ".join(f"{k} {v:.3g}" for k, v in done[key].items()
                                                             if k.endswith("_s")), flush=True)
            rows.append(done[key])
        result["axes"][name] = rows
        key = "n_kernel" if name == "n_probe" else name
        result["exponents"][name] = {p: exponent(rows, key, p) for p in ("step_s", "kernel_s", "distance_s")}
        save()
    table(result)
    plot(result, args.png)
    print(f"wrote {args.json}, {args.png}")


if __name__ == "__main__":
    main()
