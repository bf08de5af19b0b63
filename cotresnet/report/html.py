"""One self-contained page per sweep: report/report.html beside report.csv. It opens offline in any browser
(figures embedded as PNG data, styles inline, no script from anywhere): the swept keys, the warnings a reader
must see first, the threshold search's results, every figure, and a table of runs with their status, the
certificate and links to each run directory."""
from __future__ import annotations

import base64
import datetime
import html
import math
import os
from pathlib import Path
from typing import Dict, List

import pandas as pd

from .style import SYMBOLS

PAGE = "report.html"
# what each figure shows, under it
CAPTIONS = {
    "metrics": "Each metric against the primary swept key; markers: means (bars: ± sd over seeds), faint dots: "
               "single runs (stars: converged); dotted: the theory's reference (certified rate, certified decay, "
               "certified radius); dashed: a fitted power law with its slope's interval.",
    "heatmaps": "Each metric over the grid of the first two swept keys (mean over seeds; * every seed converged).",
    "risk_curves": "Training risk over flow time, coloured by the key that explains most of its spread; dashed: "
                   "the certified decay ℒ(0)e^(−c₀t) of each colour.",
    "geometry": "The COT and Wasserstein flows side by side: risk, the depth marginal's distance to uniform, "
                "the final depth histogram.",
    "threshold_phase_diagram": "The threshold search: evaluated points, final brackets, estimates with their "
                               "intervals and the scaling fit.",
    "threshold_fractions": "The fraction of seeds that succeed at each evaluated value, with the logistic fit.",
}
GLOSSARY = ("ℒ(t)/ℒ(0): final over initial training risk. min G/ℒ: the smallest P-Ł ratio along the flow. "
            "λ_min(K(μ₀)): the tangent kernel's smallest eigenvalue at initialization. c₀ = λ_min/N: the "
            "certified rate, G/ℒ ≥ c₀ while the flow stays within R₀; guaranteed e^(−c₀t): the risk ratio the "
            "certificate proves, observed: the one measured. inside R₀: the path stayed within the certified "
            "radius. theorem: whether the run meets the theorem's conditions (smooth activation, the full "
            "kernel, a resolved eigenvalue, a step small enough to follow the flow); where not, the "
            "certificate is a measurement, not a proof. Run directories hold no figure: `cotresnet-plot RUN_DIR` "
            "draws one.")
# the table's columns: (title, column, format)
COLUMNS = [("ℒ(t)/ℒ(0)", "log10_risk_ratio", "ratio"), ("test risk", "risk_test", "g"),
           ("min G/ℒ", "min_pl_ratio", "g"), ("λ_min(K(μ₀))", "lambda_min_tangent_init", "g"),
           ("c₀", "c0", "g"), ("guaranteed e^(−c₀t)", "guaranteed_factor", "g"),
           ("observed", "observed_factor", "g"), ("inside R₀", "inside_certified_region", "bool"),
           ("theorem", "theorem", "text"),
           ("steps", "steps", "int"), ("wall (s)", "wall_time_s", "f1")]
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.meta{color:#666} .warn{background:#fff6d9;border:1px solid #e8cf7a;padding:8px 14px;border-radius:4px}
figure{margin:14px 0 26px} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:12.5px;width:100%} th,td{padding:3px 7px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap} th{background:#f6f6f6;position:sticky;top:0} td.l,th.l{text-align:left}
.converged{color:#1a7f37}.max_steps{color:#1f4e99}.diverged{color:#b3261e}.failed,.corrupt{color:#000;font-weight:bold}
.incomplete,.interrupted{color:#777} .scroll{overflow-x:auto;max-height:80vh}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12.5px}
"""


def _cell(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "ratio":
        return f"{10 ** value:.3g}"
    if kind == "text":
        return html.escape(str(value))
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "int":
        return f"{int(value)}"
    if kind == "f1":
        return f"{float(value):.1f}"
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return html.escape(str(value))


def _order(value):
    """Numbers by value, then everything else by name."""
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    caption = CAPTIONS.get(path.stem, "")
    return (f'<figure id="{html.escape(path.stem)}"><img alt="{html.escape(path.stem)}" '
            f'src="data:image/png;base64,{data}"><figcaption><b>{html.escape(path.name)}</b> {caption}'
            "</figcaption></figure>")


def _runs_table(df: pd.DataFrame, keys: List[str], page_dir: Path) -> str:
    if df.empty:
        return "<p>No runs.</p>"
    shown = [k for k in keys if f"sweep.{k}" in df]
    cols = [c for c in COLUMNS if c[1] in df]
    head = ("<tr><th class=l>run</th><th class=l>status</th>"
            + "".join(f'<th title="{html.escape(k)}">{html.escape(SYMBOLS.get(k, k))}</th>' for k in shown)
            + "".join(f"<th>{t}</th>" for t, _, _ in cols) + "</tr>")
    rows = []
    for r in df.itertuples(index=False):
        rec = dict(zip(df.columns, r))
        href = Path(os.path.relpath(rec["path"], page_dir.parent)).as_posix()  # the page moves with its sweep
        status = str(rec["status"])
        title = f' title="{html.escape(str(rec.get("error")))}"' if isinstance(rec.get("error"), str) else ""
        job = str(rec["job"])  # the job's number (and replica): its swept values have their own columns
        short = job.split("_", 1)[0] + ("/" + job.rsplit("/", 1)[1] if "/" in job else "")
        rows.append(f'<tr><td class=l><a href="{html.escape(href)}/" title="{html.escape(job)}">{html.escape(short)}'
                    f'</a></td><td class="l {status}"{title}>{status}</td>'
                    + "".join(f"<td>{_cell(rec.get(f'sweep.{k}'), 'g')}</td>" for k in shown)
                    + "".join(f"<td>{_cell(rec.get(c), kind)}</td>" for _, c, kind in cols) + "</tr>")
    return f"<p class=meta>{GLOSSARY}</p><div class=scroll><table>{head}{''.join(rows)}</table></div>"


def write_report_html(sweep_dir: Path, result: Dict[str, object]) -> Path:
    """report.html in result["out"] from what report() wrote and found; returns its path."""
    from ..rundir.atomic import atomic_write_bytes
    from .status import status_lines

    sweep_dir, out = Path(sweep_dir), Path(result["out"])
    df: pd.DataFrame = result["table"]
    keys: List[str] = result["swept"]
    warnings = list(result["warnings"])
    values = {k: [str(v) for v in dict.fromkeys(sorted(df[f"sweep.{k}"].dropna(), key=_order))] for k in keys
              if f"sweep.{k}" in df}
    swept = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(', '.join(v))}</li>" for k, v in values.items())
    figures = [p for p in result["figures"] if p.suffix == ".png"]
    threshold = result.get("threshold")
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(sweep_dir.name)}: sweep report"
        f"</title><style>{STYLE}</style></head><body>",
        f"<h1>Sweep {html.escape(sweep_dir.name)}</h1>",
        f"<p class=meta>{html.escape(str(sweep_dir))} · written {datetime.datetime.now():%Y-%m-%d %H:%M} · "
        f"<a href=report.csv>report.csv</a> · <a href=report.parquet>report.parquet</a></p>",
        "<pre>" + html.escape("\n".join([str(result["line"]), *status_lines(sweep_dir, df)[1:]])) + "</pre>",
        f"<h2>Swept keys</h2><ul>{swept or '<li>none</li>'}</ul>",
    ]
    if warnings:
        parts.append("<h2>Warnings</h2><div class=warn><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
                     + "</ul></div>")
    if threshold:
        parts.append("<h2>Threshold search</h2><pre>" + html.escape("\n".join(threshold["lines"])) + "</pre>")
    parts.append("<h2>Figures</h2>" + ("".join(_figure(p) for p in figures) or "<p>No figures.</p>"))
    parts.append(f"<h2>Runs</h2>{_runs_table(df, keys, out / PAGE)}")
    # the page says, once loaded, how many of its figures the browser could draw (read by the browser test)
    parts.append("<script>addEventListener('load',()=>{const i=[...document.images];document.body.dataset.figures="
                 "i.length;document.body.dataset.drawn=i.filter(x=>x.complete&&x.naturalWidth>0).length;});</script>")
    parts.append("</body></html>")
    path = out / PAGE
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path
