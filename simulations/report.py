"""Readable results: federated vs the baselines, overall and per merchant.

Ratios divide by the strong reference: EASE^R tuned on a validation split of
the training data (:mod:`simulations.reference`), or, when the catalog was too
large for it, the fedrec recipe trained on pooled data, labelled as such.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from common.constants import AUC, EVAL_USERS, hr_at, ndcg_at, recall_at, sampled_hr_at
from common.models.registry import MODELS
from common.privacy.config import PrivacyConfig

METHODS = ("federated", "served", "reference", "centralised", "popularity", "dp-popularity")
SHORT_NAMES = {"reference": "EASE^R", "centralised": "fedrec pooled"}


def _fmt(value: float) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and not math.isnan(a) and not math.isnan(b) else "-"


def _label(method: str, results: dict[str, Any]) -> str:
    plain = {
        "reference": f"EASE^R, pooled (λ={results.get('reference', {}).get('lambda', 0):g})",
        "centralised": "same model, pooled",
    }
    privacy = results.get("privacy", {})
    if privacy.get("unit", "off") == "off":
        return plain.get(method, method)
    eps = f"eps={privacy['target_epsilon']:g}"
    return {
        "federated": f"federated (DP, {eps})",
        "served": "served (each merchant's choice)",
        "dp-popularity": f"popularity (DP, {eps})",
        "popularity": "popularity (no DP)",
    }.get(method, f"{plain.get(method, method)} (no DP)")


def _reference(results: dict[str, Any]) -> str | None:
    """The method the ratios divide by: EASE^R when it ran, else the pooled fedrec model."""
    if "overall" in results.get("reference", {}):
        return "reference"
    return "centralised" if "centralised" in results else None


def _render_reference(results: dict[str, Any], *, console: Console) -> None:
    reference = results.get("reference")
    if not reference:
        return
    if "skipped" in reference:
        console.print(
            f"[bold yellow]{reference['skipped']}[/bold yellow] Ratios divide by the fedrec "
            "recipe trained on pooled data instead (a weaker reference)."
        )
        return
    table = ", ".join(f"λ={lam}: {_fmt(v)}" for lam, v in reference.get("validation", {}).items())
    console.print(
        f"Reference: EASE^R (closed form) on pooled data, λ={reference['lambda']:g} "
        "chosen on a validation split carved from the training data (each user's last "
        f"training item), {reference['seconds']:.1f} s"
        + (f"; validation {reference['validation_metric']}: {table}." if table else ".")
    )


def _render_client_level(privacy: dict[str, Any], *, console: Console) -> None:
    level = privacy.get("client_level", {})
    if not level:
        console.print("Client-level DP: no round was aggregated, nothing was released.")
        return
    console.print(
        f"[bold]Client-level DP[/bold] (unit: {level['unit']}): epsilon "
        f"{level['epsilon']:.3f} at delta {level['delta']:g} after {level['releases']} "
        f"release(s); sigma {level['noise_multiplier']:.3f}, update clip C "
        f"{level['clipping_norm']:g}, {level['sampled_per_round']} of {level['population']} "
        f"clients per round; accountant: {level['accountant']}."
    )
    if privacy.get("device_epsilon", 0) > 0:
        console.print(
            "On-device DP-SGD (Opacus) bounds per-INTERACTION privacy only "
            f"(epsilon {privacy['device_epsilon']:g} per interaction, table below); a user's "
            "privacy is the client-level epsilon above."
        )
    else:
        console.print("On-device training is not DP; a user's privacy is the client-level epsilon.")


def _status(report: dict[str, Any], refused: dict[str, Any] | None) -> str:
    """``ok``; ``counts only`` for a merchant whose plan gave its item counts all of epsilon
    (count-only-below: no training noise was planned); else the round it refused."""
    if refused is None:
        return "ok"
    if not report.get("dp-noise-multiplier") and report.get("dp-count-noise-multiplier"):
        return "counts only (count-only-below)"
    return f"refused in round {refused['round']}"


def privacy_results(
    history: dict[str, Any], *, privacy: PrivacyConfig, model: str = "mf"
) -> dict[str, Any]:
    """What :func:`render_privacy` reads, from a run's history (``federation.json``).

    The same for a simulation and a deployment (``fedrec run``), so both end
    with the same per-merchant privacy table.
    """
    return {
        "unit": privacy.unit,
        "target_epsilon": privacy.target_epsilon,
        "delta": privacy.delta,
        "accountant": privacy.accountant,
        "per_merchant": history.get("privacy", {}),
        "refused": {
            name: {"round": r["round"], "reason": reason}
            for r in history.get("rounds", [])
            for name, reason in r.get("refused", {}).items()
        },
        "stopped_early": history.get("stopped_early", ""),
        "client_level": history.get("client_privacy", {}),
        "device_epsilon": privacy.device_epsilon,
        "trained_items": history.get("trained_items"),
        "statistics": MODELS[model].statistics if model in MODELS else False,
    }


def render_privacy(results: dict[str, Any], *, console: Console) -> None:
    """Per merchant: epsilon spent, delta, sigma, C, q, steps, unit and accountant."""
    from common.privacy.config import UNIT_DESCRIPTIONS, sampling_description
    from common.privacy.records import GRAM_SAMPLING

    privacy = results.get("privacy", {})
    if privacy.get("unit", "off") == "off":
        console.print(
            "[bold yellow]Privacy: OFF[/bold yellow] - merchants released unclipped, un-noised "
            "updates. Pass --epsilon to train with user-level differential privacy."
        )
        return
    if privacy["unit"] == "client":
        _render_client_level(privacy, console=console)
        if not privacy.get("per_merchant"):
            return
    client_mode = privacy["unit"] == "client"
    table = Table(
        title="On-device DP-SGD per device: per-INTERACTION privacy only"
        if client_mode
        else "Privacy spent per merchant (cumulative over all rounds)"
    )
    headers = (
        "merchant",
        "ε spent",
        "δ",
        "ε budget",
        "σ train",
        "σ counts",
        "C",
        "q",
        "steps",
        "unit",
        "accountant",
        "status",
    )
    for header in headers:
        table.add_column(
            header,
            justify="left" if header in ("merchant", "unit", "status") else "right",
            no_wrap=True,
        )
    refused = privacy.get("refused", {})
    reports = sorted(privacy.get("per_merchant", {}).items())
    if len(reports) > 50:
        table.caption = f"first 50 of {len(reports)} parties; all are in metrics.json"
    rows = []
    for name, report in reports[:50]:
        status = _status(report, refused.get(name))
        if "dp-epsilon" not in report:  # refused before its first release: nothing to report
            rows.append((name, *["-"] * (len(headers) - 2), status))
            table.add_row(*rows[-1])
            continue
        rows.append(
            (
                name,
                f"{report['dp-epsilon']:.3f}",
                f"{report['dp-delta']:g}",
                f"{report['dp-epsilon-max']:g}",
                f"{report['dp-noise-multiplier']:.3f}",
                f"{report['dp-count-noise-multiplier']:.2f}"
                if report["dp-count-noise-multiplier"]
                else "-",
                f"{report['dp-max-grad-norm']:g}",
                f"{report['dp-sample-rate']:.4f}",
                str(int(report["dp-steps"])),
                report["privacy-unit"],
                report["accountant"].upper(),
                status,
            )
        )
        table.add_row(*rows[-1])
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if natural <= console.width:
        console.print(table)
    else:  # too narrow for the table: one wrapped line per merchant, nothing elided
        console.print(table.title)
        for row in rows:
            pairs = zip(headers[1:], row[1:], strict=True)
            console.print(f"  {row[0]}: " + ", ".join(f"{h} {v}" for h, v in pairs), soft_wrap=True)
        if table.caption:
            console.print(f"  ({table.caption})")
    if client_mode:
        return
    sampling = GRAM_SAMPLING if privacy.get("statistics") else sampling_description(privacy["unit"])
    console.print(
        f"Unit of privacy: {UNIT_DESCRIPTIONS[privacy['unit']]}. Sampling: {sampling}. "
        + (
            "σ train is the noise of the one co-occurrence release (C: one user's L2 bound). "
            if privacy.get("statistics")
            else "σ train is the noise multiplier of every DP-SGD step. "
        )
        + "User embeddings never leave a merchant; the shared parameters are "
        "(epsilon, delta)-DP per unit (joint DP for the users' own recommendations). "
        "Not DP: the number of units at each merchant (it sets q), evaluation metrics, "
        "timings and the fact of taking part."
    )
    if privacy.get("trained_items") is not None:
        console.print(
            f"Item prior: {privacy['trained_items']} items trained; the rest are ranked by "
            "private counts below them."
        )
    if privacy.get("stopped_early"):
        console.print(f"[bold yellow]Run ended early:[/bold yellow] {privacy['stopped_early']}")


def render_sources(results: dict[str, Any], *, console: Console) -> None:
    """One line per merchant: what it serves and why (its own choice, never released)."""
    sources = results.get("served", {}).get("sources", {})
    if not sources:
        return
    console.print(
        "What each merchant serves, chosen on its users' last training items (held out from "
        "its DP training; the choice stays at the merchant and costs no budget):"
    )
    for name in sorted(sources)[:50]:
        console.print(f"  {name} {sources[name]['reason']}", soft_wrap=True)
    if len(sources) > 50:
        console.print(f"  ... {len(sources) - 50} more in metrics.json")


def render_results(results: dict[str, Any], *, console: Console, run_dir: str) -> None:
    k = int(results["top_k"])
    methods = [m for m in METHODS if "overall" in results.get(m, {})]
    columns = [ndcg_at(k), hr_at(k), recall_at(k), sampled_hr_at(k), AUC]
    overall = Table(title=f"Leave-last-out, full ranking over the catalog (K={k})")
    overall.add_column("model", no_wrap=True)
    headers = [f"NDCG@{k}", f"HR@{k}", f"Recall@{k}", f"HR@{k} (99 neg.)", "AUC"]
    for header in headers:
        overall.add_column(header, justify="right")
    reference = _reference(results)
    if reference:
        overall.add_column(f"NDCG / {SHORT_NAMES[reference]}", justify="right")
    if "popularity" in results:
        overall.add_column("NDCG / popularity", justify="right")
    if "dp-popularity" in results:
        overall.add_column("NDCG / DP popularity", justify="right")
    ref_c = results.get(reference or "", {}).get("overall", {}).get(ndcg_at(k), float("nan"))
    ref_p = results.get("popularity", {}).get("overall", {}).get(ndcg_at(k), float("nan"))
    ref_dp = results.get("dp-popularity", {}).get("overall", {}).get(ndcg_at(k), float("nan"))
    for method in methods:
        row = results[method]["overall"]
        cells = [_fmt(row.get(c, float("nan"))) for c in columns]
        ndcg = row.get(ndcg_at(k), float("nan"))  # absent when no user could be evaluated
        if reference:
            cells.append(_ratio(ndcg, ref_c))
        if "popularity" in results:
            cells.append(_ratio(ndcg, ref_p))
        if "dp-popularity" in results:
            cells.append(_ratio(ndcg, ref_dp))
        overall.add_row(_label(method, results), *cells)
    console.print(overall)
    _render_reference(results, console=console)
    fed_ndcg = results["federated"]["overall"].get(ndcg_at(k), float("nan"))
    if not results["federated"]["overall"].get(EVAL_USERS, 1):
        console.print(
            "[bold yellow]No evaluation possible:[/bold yellow] no merchant had a user with 2 or "
            "more distinct items to hold a test item out for; the figures above are empty."
        )
    if fed_ndcg < ref_dp:
        console.print(
            "[bold yellow]The DP model is below DP popularity here.[/bold yellow] Noise "
            "dominates when merchants have few users: each needs thousands of users for "
            "user-level DP-SGD to pay off (try --users 50000; benchmarks/private_quality.py)."
            + (
                " Each merchant chose what it serves on its own held-out items (below)."
                if "served" in results
                else ""
            )
        )

    per = Table(title=f"Per merchant: NDCG@{k} (users evaluated)")
    per.add_column("merchant", no_wrap=True)
    per.add_column("users", justify="right")
    for method in methods:
        per.add_column(SHORT_NAMES.get(method, method), justify="right")
    merchants = sorted(results["federated"]["per_merchant"])
    for name in merchants[:50]:
        fed = results["federated"]["per_merchant"][name]
        per.add_row(
            name,
            str(int(fed.get(EVAL_USERS, 0))),
            *[
                _fmt(results[m]["per_merchant"].get(name, {}).get(ndcg_at(k), float("nan")))
                for m in methods
            ],
        )
    if len(merchants) > 50:
        per.caption = f"first 50 of {len(merchants)} parties; all are in metrics.json"
    console.print(per)
    render_sources(results, console=console)
    render_privacy(results, console=console)
    if results.get("evaluation_missing"):
        console.print(
            f"[bold yellow]{results['evaluation_missing']} part(ies) did not answer the final "
            "evaluation within round-timeout[/bold yellow]: the federated figures cover the "
            "others only. Raise --set round-timeout, or evaluate a sample with "
            "--set fraction-evaluate."
        )
    traffic = results.get("communication", {})
    if traffic.get("train-down"):
        console.print(
            f"Communication per merchant per training round: "
            f"{traffic['train-down'] / 1024:.1f} KiB down, {traffic['train-up'] / 1024:.1f} KiB up "
            f"(payload as Flower serialises it; compression {traffic['compression']})."
        )
    timing = results["timing"]
    console.print(
        f"Federation {timing['federated_seconds']:.1f} s (local training "
        f"{timing['federated_train_seconds']:.1f} s summed over merchants), baselines "
        f"{timing['baselines_seconds']:.1f} s. Run directory: [bold]{run_dir}[/bold]"
    )
