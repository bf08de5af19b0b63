"""Audit a run: recompute every diagnostic from particles.pt and data.pt alone.

    cotresnet-diagnose RUN_DIR [--n-probe N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from ..rundir import contract as RD


def diagnostics_of(net, init, x_train, y_train, n_kernel: int, depth_weight: Optional[float] = None):
    """(every diagnostic of one set of particles as a dict, its KernelDiagnostics), from scratch: risk, G,
    P-L ratio, kernels, distances, and the depth marginal of depth-mobile particles. `depth_weight`: kappa
    when the depths move (the Wasserstein flow). Particles that overflowed (a diverged run keeps those it
    diverged at) get their risk and G only: no kernel or distance is defined for them (KernelDiagnostics None)."""
    import math

    from .. import diagnostics as D

    risk, G = D.risk_and_grad_norm2(net, x_train, y_train, depth_weight)
    out = {"risk_train": risk, "grad_norm2": G, "pl_ratio": G / risk if risk > 0 else None}
    if not all(bool(t.isfinite().all()) for t in net.particles().values()) or not math.isfinite(risk):
        return out, None
    if net.spec.depth_kernel is None:
        kd = D.kernel_diagnostics(net, x_train[:n_kernel], y_train[:n_kernel])
    else:
        from ..diagnostics.depth import depth_row, kernel_diagnostics

        kd = kernel_diagnostics(net, x_train[:n_kernel], y_train[:n_kernel], depth_weight)
        out.update(depth_row(net.particles()["s"], net.L))
    out.update(kd.row())
    out.update(D.distances(net.particles(), init))
    return out, kd


def run_kernel_samples(run_dir: Path, n_train: int, d_out: int) -> int:
    """The run's own kernel samples: from summary.json, else from its .hydra/config.yaml, else by the
    schema's default rule (the whole set while n d_out <= kernel_max_dim)."""
    from omegaconf import OmegaConf

    from ..config.derived import kernel_samples
    from ..config.schema import CallbacksConfig

    summary = RD.read_summary(run_dir) or {}
    if summary.get("kernel_samples"):
        return summary["kernel_samples"]
    try:
        callbacks = OmegaConf.load(RD.config_path(run_dir)).callbacks
        callbacks.n_probe, callbacks.kernel_max_dim  # noqa: B018 (both must be there)
    except Exception:  # absent or unreadable: the run's own rule cannot be read, the default rule applies
        callbacks = CallbacksConfig()
    return kernel_samples(callbacks, n_train, d_out)


def diagnose(run_dir: Path, n_probe: Optional[int] = None) -> dict:
    """{"init": {...}, "final": {...}, "certificate": {...}} computed in the run's dtype. Raises RunDirError
    (naming the file) for a malformed run directory, ValueError for an n_probe out of range."""
    from .. import diagnostics as D
    from ..model.build import network_from_meta
    from ..record import Certificate

    run_dir = Path(run_dir)
    particles, data = RD.load_run_tensors(run_dir)
    n_train = data["x_train"].shape[0]
    if n_probe is None:
        n_probe = run_kernel_samples(run_dir, n_train, data["y_train"].shape[1])
    if not 1 <= n_probe <= n_train:
        raise ValueError(f"--n-probe={n_probe} is out of range; it must be in [1, {n_train}] (the training set)")
    meta = particles["meta"]
    out, kds = {}, {}
    for which in ("init", "final"):
        try:
            net = network_from_meta(particles[which], meta)
        except (KeyError, TypeError, ValueError) as e:
            raise RD.RunDirError(f"{run_dir / RD.PARTICLES}: 'meta' does not rebuild the network ({e})") from e
        moving = meta.get("depth_weight") if meta.get("geometry") == "wasserstein" else None
        out[which], kds[which] = diagnostics_of(net, particles["init"], data["x_train"], data["y_train"], n_probe,
                                                moving)
        if kds[which] is None and which == "init":
            raise RD.RunDirError(f"{run_dir / RD.PARTICLES}: the initial particles are not finite")
        out[which].update(D.evaluate(net, data["x_test"], data["y_test"], bool(data.get("classification")), "test"))
    kd0, summary = kds["init"], RD.read_summary(run_dir) or {}
    steps = summary.get("steps") or 0
    cert = Certificate("full" if n_probe == n_train else "probe", n_probe, n_train, kd0.lambda_min.value,
                       kd0.lambda_min.resolution, kd0.risk, activation=meta.get("activation", "tanh"),
                       lambda_max=kd0.lambda_max, tau=summary["flow_time"] / steps if steps else float("nan"))
    out["certificate"] = cert.summary(0.0, None)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-diagnose", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--n-probe", type=int, default=None,
                    help="kernel samples: the first N training samples (default: the run's own)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    try:
        out = diagnose(args.run_dir, args.n_probe)
    except ValueError as e:  # RunDirError included: the file and the problem, no traceback
        print(f"cotresnet-diagnose: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(RD.finite_or_none(out), indent=2))
        return 0
    keys = sorted(set(out["init"]) | set(out["final"]))
    f = lambda v: "" if v is None else f"{v:14.6g}"
    print(f"{'diagnostic':30s} {'init':>14s} {'final':>14s}")
    for k in keys:
        print(f"{k:30s} {f(out['init'].get(k))} {f(out['final'].get(k))}")
    c = out["certificate"]
    label = "certificate" if c["kind"] == "full" else f"probe certificate (first {c['n']} of {c['n_train']} samples)"
    if c["c0"] is None:
        print(f"{label}: none (lambda_min {c['lambda_min_tangent_init']:.6g} is not above its resolution "
              f"{c['resolution']:.3g})")
    else:
        print(f"{label}: c0={c['c0']:.6g} certified_radius={c['certified_radius']:.6g} "
              f"(lambda_min {c['lambda_min_tangent_init']:.6g}, resolution {c['resolution']:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
