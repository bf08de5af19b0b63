"""Audit a finished run: recompute every diagnostic from particles.pt and data.pt.

    cotresnet-diagnose RUN_DIR [--n-probe N] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from . import diagnostics as D
from .model import model_from_particles
from .atomic import load_trusted


def diagnose(run_dir: Path, n_probe: int = None) -> dict:
    """{"init": {...}, "final": {...}} of every diagnostic, computed from scratch in the run's dtype."""
    run_dir = Path(run_dir)
    particles = load_trusted(run_dir / "particles.pt")
    data = load_trusted(run_dir / "data.pt")
    if n_probe is None:
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        n_probe = (summary.get("certificate") or {}).get("n_probe") or 128
    meta = particles["meta"]
    dtype = getattr(torch, meta.get("dtype", "float32"))
    out = {}
    for which in ("init", "final"):
        p = {k: v.to(dtype) for k, v in particles[which].items()}
        net = model_from_particles(p, {**meta, "embedding": meta["embedding"].to(dtype),
                                       "readout": meta["readout"].to(dtype)})
        out[which] = D.all_diagnostics(net, particles["init"], data["x_train"], data["y_train"], n_probe)
        out[which].update(D.evaluate(net, data["x_test"], data["y_test"], bool(data.get("classification")), "test"))
    lam0 = out["init"]["lambda_min_tangent"]
    cert = D.certificate(out["init"]["risk_probe"], lam0, n_probe)
    out["certificate"] = {**cert, "lambda_min_tangent_init": lam0, "n_probe": n_probe,
                          "lambda_ratio": out["final"]["lambda_min_tangent"] / lam0 if lam0 > 0 else math.nan}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-diagnose", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--n-probe", type=int, default=None, help="probe samples (default: the run's n_probe)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    for name in ("particles.pt", "data.pt"):
        if not (args.run_dir / name).is_file():
            print(f"cotresnet-diagnose: {args.run_dir / name} not found: is {args.run_dir} a run directory?",
                  file=sys.stderr)
            return 2
    try:
        out = diagnose(args.run_dir, args.n_probe)
    except ValueError as e:
        print(f"cotresnet-diagnose: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    keys = sorted(set(out["init"]) | set(out["final"]))
    print(f"{'diagnostic':28s} {'init':>14s} {'final':>14s}")
    for k in keys:
        f = lambda v: "" if v is None else f"{v:14.6g}"
        print(f"{k:28s} {f(out['init'].get(k))} {f(out['final'].get(k))}")
    c = out["certificate"]
    print(f"certificate: c0={c['c0']:.6g} certified_radius={c['certified_radius']:.6g} "
          f"lambda_ratio={c['lambda_ratio']:.6g} (n_probe={c['n_probe']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
