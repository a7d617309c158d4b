"""Readable results: federated vs centralised vs popularity, overall and per merchant."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from common.constants import AUC, EVAL_USERS, hr_at, ndcg_at, recall_at, sampled_hr_at

METHODS = ("federated", "centralised", "popularity")


def _fmt(value: float) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "-"


def render_results(results: dict[str, Any], *, console: Console, run_dir: str) -> None:
    k = int(results["top_k"])
    methods = [m for m in METHODS if m in results]
    columns = [ndcg_at(k), hr_at(k), recall_at(k), sampled_hr_at(k), AUC]
    overall = Table(title=f"Leave-last-out, full ranking over the catalog (K={k})")
    overall.add_column("model")
    headers = [f"NDCG@{k}", f"HR@{k}", f"Recall@{k}", f"HR@{k} (99 neg.)", "AUC"]
    for header in headers:
        overall.add_column(header, justify="right")
    if "centralised" in results:
        overall.add_column("NDCG / central", justify="right")
    if "popularity" in results:
        overall.add_column("NDCG / popularity", justify="right")
    ref_c = results.get("centralised", {}).get("overall", {}).get(ndcg_at(k), float("nan"))
    ref_p = results.get("popularity", {}).get("overall", {}).get(ndcg_at(k), float("nan"))
    for method in methods:
        row = results[method]["overall"]
        cells = [_fmt(row.get(c, float("nan"))) for c in columns]
        if "centralised" in results:
            cells.append(_ratio(row[ndcg_at(k)], ref_c))
        if "popularity" in results:
            cells.append(_ratio(row[ndcg_at(k)], ref_p))
        overall.add_row(method, *cells)
    console.print(overall)

    per = Table(title=f"Per merchant: NDCG@{k} (users evaluated)")
    per.add_column("merchant")
    per.add_column("users", justify="right")
    for method in methods:
        per.add_column(method, justify="right")
    merchants = sorted(results["federated"]["per_merchant"])
    for name in merchants[:50]:
        fed = results["federated"]["per_merchant"][name]
        per.add_row(
            name,
            str(int(fed[EVAL_USERS])),
            *[
                _fmt(results[m]["per_merchant"].get(name, {}).get(ndcg_at(k), float("nan")))
                for m in methods
            ],
        )
    if len(merchants) > 50:
        per.caption = f"first 50 of {len(merchants)} parties; all are in metrics.json"
    console.print(per)
    timing = results["timing"]
    console.print(
        f"Federation {timing['federated_seconds']:.1f} s (local training "
        f"{timing['federated_train_seconds']:.1f} s summed over merchants), baselines "
        f"{timing['baselines_seconds']:.1f} s. Run directory: [bold]{run_dir}[/bold]"
    )
