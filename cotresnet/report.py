"""The sweep report: every job of a sweep directory in one table, and the study's figures.

    cotresnet-report SWEEP_DIR [--out DIR] [--metric KEY ...]

A job is any directory below SWEEP_DIR holding `.hydra/config.yaml`. It works on a sweep still
running: jobs without summary.json are `incomplete` (running or killed), unreadable summaries `corrupt`.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
from pathlib import Path
from typing import Dict, List

import pandas as pd
import yaml

FINISHED = ("converged", "max_steps")
# scalar summaries drawn in the figures, by preference
METRICS = ["log10_risk_ratio", "min_pl_ratio", "lambda_min_tangent_init", "risk_test", "path_over_radius"]


def job_dirs(sweep_dir: Path) -> List[Path]:
    """Directories holding .hydra/config.yaml, except vectorized jobs' own (their replicas are the jobs)."""
    dirs = {p.parent.parent for p in Path(sweep_dir).rglob(".hydra/config.yaml")}
    return sorted((d for d in dirs if not _is_replica_container(d)), key=_job_order)


def _is_replica_container(job: Path) -> bool:
    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text()) or {}
    return bool((cfg.get("sweep") or {}).get("replicas"))


def _job_order(p: Path):
    head = p.name.split("_", 1)[0]
    return (int(head), p.name) if head.isdigit() else (math.inf, p.name)


def _flatten(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _overrides(job: Path) -> Dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else []
    out = {}
    for item in items or []:
        key, _, value = str(item).lstrip("+~").partition("=")
        if "/" not in key and key not in ("experiment",) and not key.startswith("hydra"):
            out[key] = value
    return out


def _parse(value: str):
    """An override's value as a number when it is one (so axes sort numerically)."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def job_row(job: Path, sweep_dir: Path) -> Dict[str, object]:
    cfg = _flatten(yaml.safe_load((job / ".hydra" / "config.yaml").read_text()))
    row: Dict[str, object] = {"job": str(job.relative_to(sweep_dir)), "path": str(job)}
    row.update({f"cfg.{k}": v for k, v in cfg.items() if not isinstance(v, list)})
    row.update({f"sweep.{k}": _parse(v) for k, v in _overrides(job).items()})
    summary_path = job / "summary.json"
    if not summary_path.exists():
        # still running, or killed: only the absence of summary.json is known
        row["status"] = "incomplete"
        return row
    try:
        s = json.loads(summary_path.read_text())
        row["status"] = s["status"]
    except (ValueError, KeyError) as e:
        row["status"], row["error"] = "corrupt", f"summary.json unreadable: {e}"
        return row
    if s["status"] == "failed":
        row["error"] = s.get("error")
        return row
    final = s.get("final") or {}
    row.update({k: v for k, v in final.items() if k != "step"})
    row.update({"steps": s.get("steps"), "risk_init": s.get("risk_init"), "min_pl_ratio": s.get("min_pl_ratio"),
                "wall_time_s": s.get("wall_time_s"), "diverged_at": s.get("diverged_at")})
    cert = s.get("certificate") or {}
    row["lambda_min_tangent_init"] = cert.get("lambda_min_tangent_init")
    row["certified_radius"] = cert.get("certified_radius")
    row["inside_certified_region"] = cert.get("inside_certified_region")
    ri, rf = s.get("risk_init"), final.get("risk_train")
    if ri and rf is not None and ri > 0 and rf > 0:
        row["log10_risk_ratio"] = math.log10(rf / ri)
        row["reached_1e-3"] = rf <= 1e-3 * ri
    return row


def collect(sweep_dir: Path) -> pd.DataFrame:
    """One row per job: status, every config value (`cfg.` prefix), final metrics."""
    rows = [job_row(j, Path(sweep_dir)) for j in job_dirs(sweep_dir)]
    return pd.DataFrame(rows)


def swept_keys(sweep_dir: Path) -> List[str]:
    """Config keys that take more than one value across the sweep's jobs (from overrides)."""
    values: Dict[str, set] = {}
    for j in job_dirs(sweep_dir):
        for k, v in _overrides(j).items():
            values.setdefault(k, set()).add(v)
    return [k for k, v in values.items() if len(v) > 1]


def count_statuses(sweep_dir: Path) -> str:
    """One line: how many jobs, finished, diverged, failed (and others), naming the bad ones."""
    df = collect(sweep_dir)
    if df.empty:
        return f"sweep {sweep_dir}: no jobs found"
    st = df["status"]
    line = (f"sweep {Path(sweep_dir).name}: {len(df)} jobs: {int(st.isin(FINISHED).sum())} finished "
            f"({int((st == 'converged').sum())} converged), {int((st == 'diverged').sum())} diverged, "
            f"{int((st == 'failed').sum())} failed")
    other = df[~st.isin(FINISHED + ("diverged", "failed"))]
    for status, group in other.groupby("status"):
        line += f", {len(group)} {status}"
    for label, statuses in (("failed", ("failed", "corrupt")), ("incomplete", ("incomplete",))):
        names = df[st.isin(statuses)]["job"].tolist()
        if names:
            line += f" [{label}: {', '.join(names)}]"
    return line


def _atomic_frame(df: pd.DataFrame, path: Path, kind: str) -> None:
    from .atomic import atomic_write_bytes

    buf = io.BytesIO()
    if kind == "csv":
        buf.write(df.to_csv(index=False).encode())
    else:
        df.astype({c: str for c in df.columns if df[c].dtype == object}).to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def figures(df: pd.DataFrame, keys: List[str], out: Path, metrics: List[str]) -> List[Path]:
    """Heatmaps over pairs of swept keys, metric-vs-key lines with error bands over seeds, risk curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    ok = df[df["status"].isin(FINISHED + ("diverged",))].copy()
    keys = [k for k in keys if f"sweep.{k}" in ok and k != "seed"]
    metrics = [m for m in metrics if m in ok and _numeric(ok[m]).notna().any()]
    for k in keys:
        ok[k] = ok[f"sweep.{k}"]
    if len(keys) >= 2:
        a, b = keys[0], keys[1]
        for m in metrics:
            table = ok.assign(v=_numeric(ok[m])).groupby([a, b])["v"].mean().unstack(b)
            fig, ax = plt.subplots(figsize=(6, 4.5))
            im = ax.imshow(table.values.astype(float), origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
            ax.set_yticks(range(len(table.index)), [str(i) for i in table.index])
            ax.set_xlabel(b), ax.set_ylabel(a), ax.set_title(f"{m} (mean over seeds)")
            for (i, j), v in np.ndenumerate(table.values.astype(float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="w", fontsize=8)
            fig.colorbar(im)
            written.append(_save(fig, out / f"heatmap_{m}_{a}_vs_{b}.png"))
    for k in keys:
        others = [o for o in keys if o != k]
        for m in metrics:
            fig, ax = plt.subplots(figsize=(6, 4.2))
            groups = ok.groupby(others[0]) if others else [("all", ok)]
            for label, g in groups:
                stats = g.assign(v=_numeric(g[m])).groupby(k)["v"].agg(["mean", "std"]).sort_index()
                x = _numeric(pd.Series(stats.index)) if _numeric(pd.Series(stats.index)).notna().all() \
                    else pd.Series(range(len(stats)))
                ax.plot(x, stats["mean"], marker="o", label=f"{others[0]}={label}" if others else None)
                ax.fill_between(x, stats["mean"] - stats["std"].fillna(0), stats["mean"] + stats["std"].fillna(0),
                                alpha=0.2)
            ax.set_xlabel(k), ax.set_ylabel(m), ax.set_title(f"{m} against {k} (band: std over seeds)")
            if others:
                ax.legend(fontsize=8)
            written.append(_save(fig, out / f"{m}_vs_{k}.png"))
    if keys:
        k = keys[0]
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        values = sorted(ok[k].unique(), key=lambda v: (str(type(v)), v))
        cmap = plt.get_cmap("viridis", max(len(values), 2))
        for _, r in ok.iterrows():
            path = Path(r["path"]) / "metrics.csv"
            if path.exists():
                curve = pd.read_csv(path)[["flow_time", "risk_train"]].dropna()
                ax.plot(curve["flow_time"], curve["risk_train"], color=cmap(values.index(r[k])), alpha=0.7)
        for i, v in enumerate(values):
            ax.plot([], [], color=cmap(i), label=f"{k}={v}")
        ax.set_yscale("log"), ax.set_xlabel("flow time"), ax.set_ylabel("risk_train"), ax.legend(fontsize=8)
        ax.set_title(f"risk curves coloured by {k}")
        written.append(_save(fig, out / f"risk_curves_by_{k}.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def report(sweep_dir: Path, out: Path = None, metrics: List[str] = None) -> Dict[str, object]:
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = collect(sweep_dir)
    keys = swept_keys(sweep_dir)
    if not df.empty:
        _atomic_frame(df, out / "report.csv", "csv")
        _atomic_frame(df, out / "report.parquet", "parquet")
    written = figures(df, keys, out, metrics or METRICS) if not df.empty else []
    return {"table": df, "swept": keys, "figures": written, "line": count_statuses(sweep_dir), "out": out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cotresnet-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="default: SWEEP_DIR/report")
    ap.add_argument("--metric", action="append", help=f"metrics to draw (default: {', '.join(METRICS)})")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"cotresnet-report: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    r = report(args.sweep_dir, args.out, args.metric)
    print(r["line"])
    print(f"swept keys: {', '.join(r['swept']) or 'none'}; table: {r['out'] / 'report.csv'} (+ .parquet); "
          f"{len(r['figures'])} figures in {r['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
