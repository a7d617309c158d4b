"""One self-contained HTML page per experiment: what ran, the table, the plots.

The plots are embedded (base64 PNG), so the page can be mailed or archived
alone; the experiment file, versions and every privacy statement are on it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from common.fileio import atomic_write_text
from simulations.experiment import Experiment

REPORT_FILE = "report.html"
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:12px}
img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
.warn{color:#a40}
"""


def _fmt(mean: float, low: float, high: float) -> str:
    if math.isnan(mean):
        return "-"
    if math.isnan(low):
        return f"{mean:.4g}"
    return f"{mean:.4g} ± {(high - low) / 2:.2g}"


def _summary_table(summary: pd.DataFrame, axes: list[str], metrics: list[str]) -> str:
    if summary.empty:
        return "<p>No finished runs yet.</p>"
    head = "".join(f"<th class=l>{html.escape(a)}</th>" for a in axes)
    head += "<th>seeds</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
    rows = []
    for cell, group in summary.groupby("cell", sort=False):
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        first = group.iloc[0]
        cells = "".join(f"<td class=l>{html.escape(str(first[a]))}</td>" for a in axes)
        seeds = max(int(r["seeds"]) for r in by_metric.values())
        cells += f"<td>{seeds}</td>"
        for metric in metrics:
            r = by_metric.get(metric)
            cells += (
                f"<td>{_fmt(r['mean'], r['ci-low'], r['ci-high'])}</td>"
                if r is not None
                else "<td>-</td>"
            )
        rows.append(f"<tr title='{html.escape(str(cell))}'>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def write_report(
    experiment: Experiment,
    out: Path,
    tables: dict[str, pd.DataFrame],
    plots: list[Path],
    *,
    k: int,
    failed: dict[str, str],
    expected_runs: int,
) -> Path:
    axes = [axis.name for axis in experiment.axes]
    runs = tables["runs"]
    manifest: dict[str, Any] = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
    metrics = [
        m
        for m in (
            f"ndcg@{k}",
            f"hr@{k}",
            f"ndcg@{k}-vs-centralised",
            "epsilon-spent",
            f"merchant-ndcg@{k}-std",
            "bytes-train-up",
            "bytes-train-down",
            "wall-seconds",
        )
        if m in set(tables["summary"].get("metric", []))
    ]
    parts = [
        f"<h1>{html.escape(experiment.name)}</h1>",
        f"<p>{html.escape(experiment.description)}</p>" if experiment.description else "",
        f"<p>{len(runs)} of {expected_runs} runs finished "
        f"({len(manifest['cells'])} cells × {len(experiment.seeds)} seeds). "
        "Mean ± half-width of the 95% confidence interval over seeds (Student t). "
        f"Leave-last-out evaluation, full ranking over the catalog, K={k}.</p>",
    ]
    if failed:
        items = "".join(f"<li>{html.escape(j)}: {html.escape(r)}</li>" for j, r in failed.items())
        parts.append(
            f"<p class=warn>Failed runs (rerun with the same command):</p><ul>{items}</ul>"
        )
    parts.append("<h2>Results</h2>" + _summary_table(tables["summary"], axes, metrics))
    if not runs.empty:
        statements = sorted(set(runs["privacy"]))
        parts.append(
            "<h2>Privacy</h2><ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in statements)
            + "</ul><p>Per-run statements are in runs.csv (column <code>privacy</code>); each "
            "run's ledger is in its directory.</p>"
        )
    for plot in plots:
        data = base64.b64encode(plot.read_bytes()).decode()
        parts.append(
            f"<h2>{html.escape(plot.stem.replace('_', ' '))}</h2>"
            f"<img alt='{html.escape(plot.name)}' src='data:image/png;base64,{data}'>"
        )
    parts.append(
        "<h2>Experiment file</h2><pre>" + html.escape(experiment.text) + "</pre>"
        "<h2>Versions</h2><pre>"
        + html.escape(json.dumps(manifest["versions"], indent=2))
        + "</pre>"
        "<p>Tables: runs, summary, rounds, merchants (.csv and .parquet) beside this page.</p>"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(experiment.name)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    path = out / REPORT_FILE
    atomic_write_text(path, page)
    return path


def summarise_experiment(
    experiment: Experiment, out: Path, *, failed: dict[str, str] | None = None
) -> tuple[dict[str, pd.DataFrame], list[Path], Path]:
    """Tables, plots and the HTML page of whatever runs in ``out`` have finished."""
    from simulations.experiment import cells, resolve
    from simulations.sweep import jobs
    from simulations.sweep_plots import plot_all
    from simulations.sweep_tables import write_tables

    tables = write_tables(experiment, out)
    first = cells(experiment)[0]
    k = resolve(experiment, first, experiment.seeds[0]).run.federation.top_k
    axes = [axis.name for axis in experiment.axes]
    plots = plot_all(tables, axes, k, out / "plots")
    report = write_report(
        experiment,
        out,
        tables,
        plots,
        k=k,
        failed=failed or {},
        expected_runs=len(jobs(experiment)),
    )
    return tables, plots, report
