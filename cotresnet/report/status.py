"""What a sweep (or a run) is doing now, from its directory alone (any launcher, any machine that sees it):

    cotresnet-status SWEEP_DIR [SWEEP_DIR ...]

Runs are counted as everywhere else (one flow and one run directory each): done, running (a job holds the
run's lock), failed, stopped (killed or interrupted: a rerun of the sweep continues them) and planned (the
sweep's plan, sweep_plan.json, less every run found).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List

from ..rundir import contract as RD

SHOWN = 6  # run names listed per group


def run_groups(df) -> Dict[str, List[str]]:
    """A sweep table's runs (sweep.collect: names relative to SWEEP_DIR) by group: done, running, failed,
    stopped."""
    from ..rundir.ownership import lock_holder

    groups: Dict[str, List[str]] = {"done": [], "running": [], "failed": [], "stopped": []}
    for row in df.itertuples(index=False):
        if row.status in RD.FINISHED or row.status == "diverged":
            groups["done"].append(row.job)
        elif row.status in ("failed", "corrupt"):
            groups["failed"].append(row.job)
        elif row.status == "incomplete" and lock_holder(Path(row.path)) is not None:
            groups["running"].append(row.job)
        else:  # interrupted, or incomplete with no job holding it: killed
            groups["stopped"].append(row.job)
    return groups


def _names(names: List[str]) -> str:
    more = f", … {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def status_lines(sweep_dir: Path, df=None) -> List[str]:
    """The status of a sweep directory in a few lines (or of a single run directory in one); `df`: the sweep's
    table when it is already collected."""
    from .sweep import collect, count_text, holds_runs

    sweep_dir = Path(sweep_dir)
    if (sweep_dir / RD.IDENTITY).exists() and not (sweep_dir / RD.SWEEP_PLAN).exists() and not holds_runs(sweep_dir):
        return [_run_line(sweep_dir)]
    df, plan = collect(sweep_dir) if df is None else df, RD.read_sweep_plan(sweep_dir)
    groups, found = run_groups(df), len(df)
    jobs = f" in {count_text(df['job_dir'].nunique(), 'job')}" if found and df["job_dir"].nunique() != found else ""
    if plan and plan.get("runs") is not None:
        limit = "at most " if plan.get("bound") else ""
        head = (f"sweep {sweep_dir.name} ({plan['sweeper']} sweeper): {count_text(found, 'run')}{jobs} found, "
                f"{limit}{plan['runs']} planned" + (" if its brackets hold" if plan.get("bound") else ""))
    else:
        head = (f"sweep {sweep_dir.name}: {count_text(found, 'run')}{jobs} found, no plan known (sweep_plan.json "
                "absent or open-ended)")
    lines = [head]
    detail = ""
    if found:
        st = df["status"]
        detail = (f"  ({int(st.isin(RD.FINISHED).sum())} finished, {int((st == 'converged').sum())} of them converged; "
                  f"{int((st == 'diverged').sum())} diverged)")
    for group, text in (("done", "done"), ("running", "running"), ("failed", "failed"), ("stopped", "stopped")):
        names = groups[group]
        if group == "done":
            lines.append(f"  {text:<8} {len(names):>5}" + (detail if names else ""))
        elif names:
            hint = "  (killed or interrupted: rerun the sweep's command to continue them)" if group == "stopped" else ""
            lines.append(f"  {text:<8} {len(names):>5}  {_names(names)}{hint}")
    if plan and plan.get("runs") is not None:
        left = max(plan["runs"] - found, 0)
        lines.append(f"  {'planned':<8} {left:>5}  not started" + (" (at most)" if plan.get("bound") else ""))
    return lines


def _run_line(run_dir: Path) -> str:
    """A single run: its summary's status, or how far it got."""
    from ..rundir.ownership import lock_holder

    try:
        s = RD.read_summary(run_dir)
    except RD.RunDirError as e:
        return f"run {run_dir.name}: unreadable ({e})"
    if s is not None:
        return f"run {run_dir.name}: {s['status']} after {s.get('steps')} steps (t = {s.get('flow_time', 0):.4g})"
    try:
        rows = RD.read_table(run_dir)
        step = int(rows["step"].iloc[-1]) if len(rows) else 0
    except RD.RunDirError:
        step = 0
    state = "running" if lock_holder(run_dir) is not None else "stopped (killed: rerun its command to continue it)"
    return f"run {run_dir.name}: {state}, last logged step {step}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-status", description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", type=Path, nargs="+", metavar="SWEEP_DIR")
    args = ap.parse_args(argv)
    for d in args.dirs:
        if not d.is_dir():
            print(f"cotresnet-status: {d} is not a directory", file=sys.stderr)
            return 2
    for d in args.dirs:
        print("\n".join(status_lines(d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
