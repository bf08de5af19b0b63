"""Benchmark suite: every row is a ratio against a baseline measured in the same process.

    python scripts/bench.py [--gpu] [--quick] [--only GROUP ...] [--json bench.json]

Rows:
  lightning_vs_plain   one full-batch step through Lightning (the framework's path) / a plain
                       PyTorch loop of the same model (zero_grad, risk, backward, SGD step)
  step_vs_matmuls      the plain step / the same layer matmuls run bare (forward + backward shapes), for
                       each model.backprop: fused (the default), recompute, autograd (plain PyTorch)
  activation_memory    bytes autograd keeps for backward, model.backprop=fused / recompute against autograd;
                       on a GPU also the peak memory of the whole step (peak_memory)
  diagnostics_on_off   the default job with its default diagnostics / without the diagnostics callback
  compiled_vs_eager    the plain step with torch.compile (CPU: default, GPU: reduce-overhead = CUDA graphs) /
                       the eager plain step; framework_compiled_vs_eager: the Lightning step with that
                       trainer.compile / the same eager plain step
  integrators          Euler / rk4 / dopri5 / rk4+adjoint: step time and activation memory (bytes of
                       tensors autograd saves), each against Euler
  replicas_vs_seq      R networks stepped together (ReplicatedResNet) / R networks stepped one after another,
                       both through the framework's Lightning step (R = 4, 16); throughput ratio, higher is better
  sweep_vectorized     a 16-seed sweep end to end (start-up, diagnostics, logging, files): sequential jobs /
                       one vectorized job (wall time ratio, higher is better)
  startup_vs_import    a small job end to end (debug=fast: 5 steps, no diagnostics) / importing torch,
                       lightning and hydra in a fresh interpreter (wall time ratio, lower is better)
  depth_step_vs_layered
                       the plain SGD step of depth-mobile particles (Gaussian kernel, h 0.1, Euler, 4 substeps,
                       the Wasserstein flow: depths move) / the layered Euler step of the same (N, d, L, M), at
                       experiment=cot_vs_wasserstein's size and the default one; depth_step_vs_matmuls: the same
                       step / the bare matmuls of its L * substeps stages of all L M particles (the kernel's
                       weights vanish nowhere: every stage multiplies every particle, substeps * L times the
                       layered step's work)
  depth_kernel_vs_layered
                       one kernel diagnostics evaluation on the training set, depth-mobile (depth columns
                       included) / layered, at the same sizes
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cotresnet.data import Dataset, stack_datasets  # noqa: E402
from cotresnet.job.flow_callback import Cadence, FlowDiagnostics, MemberOutputs  # noqa: E402
from cotresnet.job.memory import saved_tensor_bytes  # noqa: E402
from cotresnet.job.module import COTFlowModule, FlowDataModule  # noqa: E402
from cotresnet.model.layered import MeanFieldResNet  # noqa: E402
from cotresnet.model.particles import embedding_matrix, init_particles, readout_matrix  # noqa: E402
from cotresnet.model.replicas import ReplicatedResNet  # noqa: E402
from cotresnet.model.spec import NetworkSpec  # noqa: E402
from cotresnet.record import FlowRecord, learning_rate  # noqa: E402

BACKPROPS = ("fused", "recompute", "autograd")
# --only: size_rows (lightning_vs_plain .. compiled_vs_eager), diagnostics_rows, replica_and_integrator_rows
# (replicas_vs_seq, sweep_vectorized, integrators), depth_rows
ROW_GROUPS = ("size", "diagnostics", "replicas", "startup", "depth")


def make(N, d, L, M, device, integrator="euler", adjoint=False, dtype=torch.float32, seed=0, backprop="fused"):
    d_in = d_out = max(1, d // 2)
    spec = NetworkSpec(L=L, M=M, d=d, d_in=d_in, d_out=d_out, integrator=integrator, substeps=2, adjoint=adjoint,
                       rtol=1e-5, atol=1e-7, backprop=backprop, dtype=str(dtype).replace("torch.", ""))
    net = MeanFieldResNet(init_particles(L, M, d, seed=seed, dtype=dtype), spec,
                          embedding_matrix("pad", d, d_in, 0, dtype), readout_matrix("first", d, d_out, 0, dtype)).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, d_in, generator=g, dtype=dtype)
    y = torch.tanh(x[:, :d_out] * 2)
    return net, Dataset(x, y, x[:0], y[:0])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_sgd(net, loss, steps, device, warmup=5, compile_mode=None):
    """Seconds per SGD step (zero_grad, loss(net), backward, step) on a copy of `net`: every
    measurement starts from the same particles (no drift towards inf or denormals). With
    `compile_mode`, `loss` goes through torch.compile (compiled during the warm-up)."""
    net = copy.deepcopy(net)
    if compile_mode:
        loss = torch.compile(loss, mode=compile_mode)
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate(0.01, net.L, net.M, "mean_field"))
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        loss(net).backward()
        opt.step()
    sync(device)
    return (time.perf_counter() - t0) / steps


def time_plain(net, ds, steps, device, warmup=5, compile_mode=None):
    """The plain PyTorch loop of one network."""
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    return time_sgd(net, lambda n: n.risk(x, y), steps, device, warmup, compile_mode)


class _StepTimer:
    """Times steps warmup..end of a Lightning fit (excludes Trainer start-up)."""

    def __init__(self, warmup):
        import lightning as pl

        timer = self

        class CB(pl.Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                if trainer.global_step == warmup:
                    sync(pl_module.device)
                    timer.t0 = time.perf_counter()

            def on_train_end(self, trainer, pl_module):
                sync(pl_module.device)
                timer.t1 = time.perf_counter()

        self.callback = CB()


def fit(net, ds, steps, device, callbacks=(), warmup=5, compile="none"):
    """(seconds per step after warm-up, wall seconds of the whole fit, CPU seconds of the whole fit).
    `net` may be a ReplicatedResNet, with `ds` its stacked datasets; `compile` is trainer.compile."""
    import lightning as pl

    timer = _StepTimer(warmup)
    dt = [0.01] * net.R if isinstance(net, ReplicatedResNet) else 0.01
    module = COTFlowModule(copy.deepcopy(net), dt, "mean_field", compile)
    trainer = pl.Trainer(max_steps=warmup + steps, accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         logger=False, callbacks=[timer.callback, *callbacks], enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                         limit_val_batches=0, log_every_n_steps=1)
    t, c = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=FlowDataModule(ds, warmup + steps))
    return (timer.t1 - timer.t0) / steps, time.perf_counter() - t, time.process_time() - c


def time_matmuls(N, d, L, M, device, steps, dtype=torch.float32):
    """The step's matmuls alone: per layer forward x W^T, h U; backward the 4 transposed products."""
    x = torch.randn(N, d, device=device, dtype=dtype)
    W = torch.randn(M, d, device=device, dtype=dtype)
    U = torch.randn(M, d, device=device, dtype=dtype)
    h = torch.randn(N, M, device=device, dtype=dtype)
    for i in range(3 + steps):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        for _ in range(L):
            x @ W.T, h @ U, x @ U.T, h.T @ x, x.T @ h, x @ W.T  # noqa: B018 (fwd 2, bwd 4)
    sync(device)
    return (time.perf_counter() - t0) / steps


def time_replicas(nets, ds, steps, device, warmup=3):
    """Seconds per framework step of all R networks: stacked in one ReplicatedResNet, and one after another."""
    stacked = ReplicatedResNet(nets).to(device), stack_datasets([ds] * len(nets))

    def together():
        return fit(*stacked, steps, device, warmup=warmup)[0]

    def sequential():
        return sum(fit(n.to(device), ds, steps, device, warmup=warmup)[0] for n in nets)

    return together, sequential


def peak_step_memory(net, ds, device) -> int:
    """Peak bytes a GPU allocates during one step (risk, backward), above what was allocated before."""
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    net.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    net.risk(x, y).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def time_sweep(vectorized: bool, seeds: int = 16, steps: int = 200) -> float:
    args = ["-m", "cotresnet.train", "-m", f"seed={','.join(map(str, range(seeds)))}", "model.L=8", "model.M=32",
            f"trainer.max_steps={steps}", "trainer.converge_ratio=0", "callbacks.kernel_every=100",
            "callbacks.ot_every=100", "hydra.sweep.dir=s"]
    return time_command(args + ["sweep.vectorize=[seed]"] * vectorized)


def time_command(args) -> float:
    """Wall time of a fresh interpreter running `args` (python's own arguments), in a scratch directory."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True, cwd=tmp)
        return time.perf_counter() - t0


def startup_rows(row, args) -> None:
    """What a job costs beyond the imports every job pays: a debug=fast job against the bare imports."""
    job = ["-m", "cotresnet.train", "debug=fast", "hydra.run.dir=run"]
    imports = ["-c", "import torch, lightning, hydra"]
    t_job, t_import = interleaved_best([lambda: time_command(job), lambda: time_command(imports)],
                                       2 if args.quick else 5)
    row("startup_vs_import", "debug=fast", t_job, t_import, unit="s")


def interleaved_best(fns, repeats):
    """Best time of each function over `repeats` rounds, run in turn (the machine's load drifts)."""
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            best[i] = min(best[i], f())
    return best


def activation_bytes(net, ds, device):
    x, y = ds.x_train.to(device), ds.y_train.to(device)
    return saved_tensor_bytes(lambda: net.risk(x, y), exclude=[*net.parameters(), *net.buffers(), x, y])


def size_rows(row, args, device, n) -> None:
    """Per size: Lightning against the plain loop, each backprop against bare matmuls, memory, compiled."""
    sizes = [(256, 8, 16, 128), (4096, 32, 64, 256)] if not args.gpu else [(1024, 16, 16, 128), (8192, 64, 64, 1024)]
    for N, d, L, M in sizes:
        steps = n // 2 if N * L * M < 1e7 else max(5, n // 20)
        size = str((N, d, L, M))
        # many short interleaved rounds: this shared machine's load drifts within seconds
        repeats = 2 if args.quick or N > 1000 else 9
        made = {bp: make(N, d, L, M, device, backprop=bp) for bp in BACKPROPS}
        nets = {bp: net for bp, (net, _) in made.items()}
        net, ds = made["fused"]
        plain, lit = interleaved_best([lambda: time_plain(net, ds, steps, device),
                                       lambda: fit(net, ds, steps, device)[0]], repeats)
        row("lightning_vs_plain", size, lit, plain)
        times = interleaved_best([lambda bp=bp: time_plain(nets[bp], ds, steps, device) for bp in BACKPROPS]
                                 + [lambda: time_matmuls(N, d, L, M, device, steps)], repeats)
        for bp, t in zip(BACKPROPS, times):
            row(f"step_vs_matmuls ({bp})", size, t, times[-1])
        kept = {bp: activation_bytes(nets[bp], ds, device) for bp in BACKPROPS}
        for bp in BACKPROPS[:-1]:
            row(f"activation_memory ({bp} vs autograd)", size, kept[bp], kept["autograd"], unit="bytes")
            if args.gpu:
                row(f"peak_memory ({bp} vs autograd)", size, peak_step_memory(nets[bp], ds, device),
                    peak_step_memory(nets["autograd"], ds, device), unit="bytes")
        if N * L * M < 1e7:  # the small model: launch overhead is what compiling removes
            mode = "reduce-overhead" if args.gpu else "default"
            compiled = time_plain(net, ds, steps, device, warmup=5, compile_mode=mode)
            row(f"compiled_vs_eager ({mode})", size, compiled, plain)
            row(f"framework_compiled_vs_eager ({mode})", size, fit(net, ds, steps, device, compile=mode)[0], plain)
        elif args.gpu:  # the large model: inductor fuses what eager runs as separate elementwise passes
            compiled = time_plain(net, ds, steps, device, warmup=3, compile_mode="default")
            row("step_vs_matmuls (fused, compiled)", size, compiled, times[-1])
            torch.set_float32_matmul_precision("high")  # trainer=gpu's default: TF32 matmuls
            tf32 = interleaved_best([lambda: time_plain(net, ds, steps, device),
                                     lambda: time_matmuls(N, d, L, M, device, steps)], repeats)
            torch.set_float32_matmul_precision("highest")
            row("step_vs_matmuls (fused, TF32)", size, *tf32)


def diagnostics_rows(row, args, device) -> None:
    """The default job (256 teacher samples, L=16, M=128, default cadences) with and without diagnostics."""
    from cotresnet.config.compose import compose_config
    from cotresnet.config.derived import kernel_samples
    from cotresnet.job.checks import check_config
    from cotresnet.model.build import student_network

    cfg = compose_config([f"trainer.max_steps={300 if args.quick else 1500}"])
    data = check_config(cfg)

    def default_job(with_diag):
        net = student_network(cfg, data.d_in, data.d_out).to(device)
        cadence = Cadence(cfg.trainer.log_every, cfg.callbacks.kernel_every, cfg.callbacks.ot_every,
                          kernel_samples(cfg.callbacks, data.n_train, data.d_out))
        member = MemberOutputs(data.to(torch.float32), [])
        cbs = [FlowDiagnostics(FlowRecord(), member.data, [member], cadence)] if with_diag else []
        return fit(net, data.to(torch.float32), cfg.trainer.max_steps - 5, device, cbs)[1:]

    # wall time on a shared 2-core machine drifts by +-15 % between runs; CPU time much less
    runs = {False: [], True: []}
    for _ in range(2 if args.quick else 4):
        for with_diag in (False, True):
            runs[with_diag].append(default_job(with_diag))
    for i, what in ((0, "fit wall"), (1, "fit CPU time")):
        on, off = min(r[i] for r in runs[True]), min(r[i] for r in runs[False])
        row("diagnostics_on_off", f"default job ({what})", on, off, unit="s")


def replica_and_integrator_rows(row, args, device, n) -> None:
    """Replicas against sequential framework steps, a vectorized sweep, ODE integrators against Euler."""
    N, d, L, M = (256, 8, 8, 32) if not args.gpu else (1024, 16, 16, 128)
    for R in (4, 16):
        nets = [make(N, d, L, M, device, seed=r)[0] for r in range(R)]
        together, sequential = time_replicas(nets, make(N, d, L, M, device)[1], max(5, n // 4), device)
        t_rep, t_seq = interleaved_best([together, sequential], 2 if args.quick else 3)
        row(f"replicas_vs_seq R={R}", str((N, d, L, M)), t_seq, t_rep, unit="throughput ratio")
    if not args.gpu:
        t_vec, t_seq = interleaved_best([lambda: time_sweep(True), lambda: time_sweep(False)], 1)
        row("sweep_vectorized (16 seeds)", "(256, 8, 8, 32) 200 steps", t_seq, t_vec, unit="wall ratio")
    N, d, L, M = (256, 8, 16, 128) if not args.gpu else (1024, 16, 16, 128)
    base_net, ds = make(N, d, L, M, device)
    euler_t = time_plain(base_net, ds, max(5, n // 4), device)
    euler_m = activation_bytes(base_net, ds, device)
    for integ, adj in [("rk4", False), ("dopri5", False), ("rk4", True)]:
        net, _ = make(N, d, L, M, device, integ, adj)
        name = f"{integ}{'+adjoint' if adj else ''}_vs_euler"
        row(name, str((N, d, L, M)), time_plain(net, ds, max(5, n // 4), device), euler_t)
        row(name.replace("_vs", "_memory_vs"), str((N, d, L, M)), activation_bytes(net, ds, device), euler_m,
            unit="bytes")


def depth_pair(N, d, L, M, d_in, d_out, device, h=0.1, kernel="gaussian", substeps=4):
    """The layered Euler ResNet and depth-mobile particles on its layer grid (same u, w, b, E, R), float32,
    with N teacher-like samples: (layered, depth-mobile, x, y)."""
    from dataclasses import replace

    from cotresnet.model.depth import DepthMobileResNet, with_grid_depths

    spec = NetworkSpec(L=L, M=M, d=d, d_in=d_in, d_out=d_out)
    p = init_particles(L, M, d, seed=0)
    E, R = embedding_matrix("pad", d, d_in, 0), readout_matrix("first", d, d_out, 0)
    layered = MeanFieldResNet({k: v.clone() for k, v in p.items()}, spec, E, R).to(device)
    depth_spec = replace(spec, depth_kernel=kernel, bandwidth=h, substeps=substeps)
    depth = DepthMobileResNet(with_grid_depths(p), depth_spec, E, R).to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, d_in, generator=g).to(device)
    return layered, depth, x, torch.tanh(2 * x[:, :d_out])


def time_depth_sgd(net, x, y, steps, device, kappa, warmup=5):
    """Seconds per step of the Wasserstein flow as the Lightning module steps it, without Lightning: SGD on
    theta (lr) and on the depths (kappa lr), then the depths folded into [0, 1]; from a copy of `net`."""
    from cotresnet.model.depth import fold_depth

    net = copy.deepcopy(net)
    lr = learning_rate(0.01, net.L, net.M, "mean_field")
    opt = torch.optim.SGD([{"params": [net.u, net.w, net.b]}, {"params": [net.s], "lr": kappa * lr}], lr=lr)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        net.risk(x, y).backward()
        opt.step()
        with torch.no_grad():
            net.s.copy_(fold_depth(net.s))
    sync(device)
    return (time.perf_counter() - t0) / steps


def time_once(f, device):
    """Seconds of one call of f()."""
    sync(device)
    t0 = time.perf_counter()
    f()
    sync(device)
    return time.perf_counter() - t0


def depth_rows(row, args, device, n) -> None:
    """Depth-mobile particles (Wasserstein flow, kappa 10) against the layered Euler ResNet of the same
    (N, d, L, M): experiment=cot_vs_wasserstein's size and the framework's default (its kernel samples: the
    whole training set, n d_out <= callbacks.kernel_max_dim)."""
    from cotresnet import diagnostics as D
    from cotresnet.diagnostics import depth as depth_diagnostics

    kappa = 10.0
    for (N, d, L, M), d_in, d_out in [((32, 3, 4, 8), 2, 2), ((256, 8, 16, 128), 4, 2)]:
        layered, depth, x, y = depth_pair(N, d, L, M, d_in, d_out, device)
        size = str((N, d, L, M))
        steps = n if N * L * M < 1e5 else max(5, n // 10)
        repeats = 2 if args.quick else 7
        stages = L * depth.spec.substeps
        t_depth, t_layered, t_matmuls = interleaved_best(
            [lambda: time_depth_sgd(depth, x, y, steps, device, kappa),
             lambda: time_sgd(layered, lambda m: m.risk(x, y), steps, device),
             lambda: time_matmuls(N, d, stages, L * M, device, steps)], repeats)
        row("depth_step_vs_layered", size, t_depth, t_layered)
        row("depth_step_vs_matmuls", size, t_depth, t_matmuls)
        k_depth, k_layered = interleaved_best(
            [lambda: time_once(lambda: depth_diagnostics.kernel_diagnostics(depth, x, y, kappa), device),
             lambda: time_once(lambda: D.kernel_diagnostics(layered, x, y), device)], 1 if args.quick else 3)
        row("depth_kernel_vs_layered", size, k_depth, k_layered, unit="s/evaluation")


def main(argv=None):
    from cotresnet.job.memory import keep_freed_memory

    # every row runs in the heap every job has (job/fit.py): freed memory stays in it, so a step that allocates
    # what the last one freed (or what a kernel evaluation freed) does not fault its pages in again
    keep_freed_memory()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="run on cuda:0 with GPU-sized shapes")
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--only", nargs="+", choices=ROW_GROUPS, default=ROW_GROUPS,
                    help="run these groups of rows only, in the suite's order (default: all)")
    ap.add_argument("--json", type=Path, default=Path("bench.json"))
    args = ap.parse_args(argv)
    device = torch.device("cuda:0" if args.gpu else "cpu")
    rows = []
    n = 20 if args.quick else 200

    def row(name, size, value, base, unit="s/step", **extra):
        r = {"row": name, "size": size, "value": value, "baseline": base, "ratio": value / base, "unit": unit, **extra}
        rows.append(r)
        print(f"{name:42s} {size:28s} {value:12.4g} {base:12.4g} {r['ratio']:8.3f}", flush=True)

    print(f"device: {device} ({torch.cuda.get_device_name(0) if args.gpu else f'{torch.get_num_threads()} CPU threads'})")
    print(f"{'row':42s} {'(N, d, L, M)':28s} {'value':>12s} {'baseline':>12s} {'ratio':>8s}")
    groups = {"size": lambda: size_rows(row, args, device, n), "diagnostics": lambda: diagnostics_rows(row, args, device),
              "replicas": lambda: replica_and_integrator_rows(row, args, device, n),
              "startup": lambda: None if args.gpu else startup_rows(row, args),
              "depth": lambda: depth_rows(row, args, device, n)}
    for name in ROW_GROUPS:
        if name in args.only:
            groups[name]()
    args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
