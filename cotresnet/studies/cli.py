"""The studies' two commands.

    cotresnet-reproduce NAME|--all [--quick] [--out DIR] [--seeds K] [--pdf]    published claims, PASS or FAIL
    cotresnet-study NAME|--all [--quick] [--out DIR] [--seeds K] [--pdf]        the paper's open questions, the
                                                                                mean-field limit, coord check, transfer

Each entry runs its default sizes (a few CPU minutes; --quick: under a minute), writes <out>/<name>/ (figure.png,
verdict.json, table.csv, runs/) and prints one line: NAME: <quantity> = <value> [<lo>, <hi>] (95%) vs claimed
<form>: PASS|FAIL (<runtime> s). The exit status is 0 when every entry ran (a FAIL is a result), 1 when one raised.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
import warnings
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import Callable, Dict, List, Optional


def _entry(module: str, **kwargs) -> Callable:
    """The run function of a study module, imported when the entry runs."""
    def run(where: Path, quick: bool, seeds: Optional[int]):
        return import_module(f"cotresnet.studies.{module}").run(where, quick=quick, seeds=seeds, **kwargs)
    return run


REPRODUCE: Dict[str, Callable] = {
    "depth_scaling_iid": _entry("depth_scaling", scheme="iid"),
    "depth_scaling_shared": _entry("depth_scaling", scheme="shared"),
    "ode_gap_shared": _entry("ode_gap", profile="shared"),
    "ode_gap_smooth": _entry("ode_gap", profile="smooth"),
    "width_threshold": _entry("width_threshold"),
    "ntk_lambda_min": _entry("ntk_width"),
}

STUDIES: Dict[str, Callable] = {
    "relu_vs_smooth": _entry("relu_sensitivity"),
    "pl_constant": _entry("pl_constant"),
    "kernel_regime": _entry("kernel_regime"),
    "gd_vs_flow": _entry("gd_vs_flow", part="order"),
    "gd_stability_edge": _entry("gd_vs_flow", part="edge"),
    "mean_field_limit": _entry("mean_field_limit"),
    "coord_check": _entry("coord_check"),
    "transfer": _entry("transfer"),
}


def run_entries(registry: Dict[str, Callable], names: List[str], out: Path, quick: bool = False,
                seeds: Optional[int] = None, formats=("png",)) -> List[object]:
    """Run the named entries one after another: write each one's files, print its line; returns the verdicts
    (None for an entry that raised, after printing its error)."""
    import torch

    from .common import write_outputs

    torch.set_num_threads(1)  # the studies are sized for one core; their timings are one thread's
    verdicts = []
    for name in names:
        where = out / name
        t0 = time.time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the relu warning, Lightning's: the line is the output
                verdict, table, fig = registry[name](where, quick, seeds)
        except Exception as e:  # one entry's failure does not stop the others
            print(f"{name}: ERROR {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stderr)
            verdicts.append(None)
            continue
        verdict.runtime_s = time.time() - t0
        write_outputs(where, verdict, table, fig, formats)
        print(verdict.line(), flush=True)
        verdicts.append(verdict)
    return verdicts


def _main(registry: Dict[str, Callable], prog: str, argv=None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", choices=sorted(registry), help="one entry")
    p.add_argument("--all", action="store_true", help="every entry, in order")
    p.add_argument("--quick", action="store_true", help="the small sizes (under a minute each)")
    p.add_argument("--out", type=Path, default=Path("studies"), help="where <name>/ goes (default ./studies)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per size (default: each entry's own)")
    p.add_argument("--pdf", action="store_true", help="also write figure.pdf")
    a = p.parse_args(argv)
    if bool(a.name) == a.all:
        p.error("give one NAME or --all")
    if a.seeds is not None and a.seeds < 2:
        p.error("--seeds must be at least 2 (intervals over seeds)")
    names = list(registry) if a.all else [a.name]
    verdicts = run_entries(registry, names, a.out, a.quick, a.seeds, ("png", "pdf") if a.pdf else ("png",))
    return 0 if all(v is not None for v in verdicts) else 1


reproduce_main = partial(_main, REPRODUCE, "cotresnet-reproduce")
study_main = partial(_main, STUDIES, "cotresnet-study")


def main(argv=None) -> int:
    """python -m cotresnet.studies.cli reproduce|study ...: either command."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("reproduce", "study"):
        print("usage: python -m cotresnet.studies.cli reproduce|study NAME|--all [options]", file=sys.stderr)
        return 2
    return (reproduce_main if argv[0] == "reproduce" else study_main)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
