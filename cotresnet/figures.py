"""The sweep report's figures (drawn from the table report.collect builds)."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pandas as pd

from .rundir import FINISHED


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def sweep_figures(df: pd.DataFrame, keys: List[str], out: Path, metrics: List[str]) -> List[Path]:
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


