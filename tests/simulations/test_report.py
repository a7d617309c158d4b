"""The printed report: every merchant's privacy parameters, and the low-utility warning."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from simulations.report import render_results

NAMES = ("merchant-long-name-00", "merchant-long-name-01")


def _metrics(ndcg: float) -> dict[str, float]:
    return {
        "hr@10": 2 * ndcg,
        "ndcg@10": ndcg,
        "recall@10": 2 * ndcg,
        "auc": 0.8,
        "sampled-hr@10": 0.5,
        "eval-users": 100.0,
    }


def _results(federated: float, dp_popularity: float) -> dict[str, Any]:
    def method(ndcg: float) -> dict[str, Any]:
        return {"overall": _metrics(ndcg), "per_merchant": {n: _metrics(ndcg) for n in NAMES}}

    per_merchant = {
        name: {
            "dp-epsilon": 2.9987 + i / 1000,
            "dp-delta": 1e-6,
            "dp-epsilon-max": 3.0,
            "dp-noise-multiplier": 4.152 + i,
            "dp-count-noise-multiplier": 14.04,
            "dp-max-grad-norm": 0.1,
            "dp-sample-rate": 0.4299,
            "dp-steps": 30.0 + i,
            "privacy-unit": "user",
            "accountant": "rdp",
        }
        for i, name in enumerate(NAMES)
    }
    return {
        "top_k": 10,
        "federated": method(federated),
        "popularity": method(0.021),
        "dp-popularity": method(dp_popularity),
        "timing": {
            "federated_seconds": 1.0,
            "federated_train_seconds": 0.5,
            "baselines_seconds": 0.2,
        },
        "privacy": {
            "unit": "user",
            "target_epsilon": 3.0,
            "delta": 1e-6,
            "accountant": "rdp",
            "per_merchant": per_merchant,
            "refused": {NAMES[1]: {"round": 4}},
            "stopped_early": None,
            "trained_items": 582,
        },
    }


def _render(results: dict[str, Any], width: int = 160) -> str:
    out = io.StringIO()
    render_results(results, console=Console(file=out, width=width), run_dir="runs/x")
    return out.getvalue()


def test_privacy_table_names_every_merchant_in_full_with_its_parameters() -> None:
    text = _render(_results(federated=0.08, dp_popularity=0.02))
    privacy_rows = [line for line in text.splitlines() if "RDP" in line]
    assert len(privacy_rows) == 2
    first, second = privacy_rows
    for cell in ("2.999", "1e-06", "4.152", "14.04", "0.1", "0.4299", "30", "user", "ok"):
        assert cell in first, cell
    assert "5.152" in second and "31" in second and "refused in round 4" in second
    assert "below DP popularity" not in text


def test_a_merchant_that_only_released_counts_is_named_so_not_refused() -> None:
    results = _results(federated=0.08, dp_popularity=0.02)
    counts_only = results["privacy"]["per_merchant"][NAMES[1]]
    counts_only.update({"dp-noise-multiplier": 0.0, "dp-steps": 0.0})
    text = _render(results)
    second = [line for line in text.splitlines() if "RDP" in line][1]
    assert "counts only (count-only-below)" in second and "refused" not in second


def test_a_narrow_terminal_wraps_privacy_values_but_never_elides_them() -> None:
    text = _render(_results(federated=0.08, dp_popularity=0.02), width=90)
    table = text[text.index("Privacy spent per merchant") :]
    assert "…" not in table
    for name in NAMES:
        assert name in table  # merchant names are never wrapped or cut
    assert "4.152" in table and "0.4299" in table


def test_warns_when_the_dp_model_is_below_dp_popularity() -> None:
    text = _render(_results(federated=0.015, dp_popularity=0.02))
    assert "The DP model is below DP popularity here" in text


def _with_references(results: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    def method(ndcg: float) -> dict[str, Any]:
        return {"overall": _metrics(ndcg), "per_merchant": {n: _metrics(ndcg) for n in NAMES}}

    return {**results, "centralised": method(0.04), "reference": {**reference, **method(0.1)}}


EASE = {
    "method": "EASE^R",
    "lambda": 300.0,
    "validation_metric": "ndcg@10",
    "validation": {"100": 0.0912, "300": 0.0951},
    "seconds": 1.5,
}


def _ratio_cells(text: str, label: str) -> list[str]:
    row = next(line for line in text.splitlines() if line.lstrip("│ ").startswith(label))
    return [cell for cell in row.split() if cell.endswith("x")]


def test_ratios_divide_by_ease_and_say_so() -> None:
    results = _with_references(_results(federated=0.08, dp_popularity=0.02), EASE)

    text = _render(results, width=220)

    assert "NDCG / EASE^R" in text and "NDCG / fedrec pooled" not in text
    assert _ratio_cells(text, "federated")[0] == "0.80x"  # 0.08 / 0.1
    assert _ratio_cells(text, "same model, pooled (no DP)")[0] == "0.40x"  # 0.04 / 0.1
    assert _ratio_cells(text, "EASE^R, pooled (λ=300) (no DP)")[0] == "1.00x"
    assert "λ=300 chosen on a validation split carved from the training data" in text
    assert "λ=100: 0.0912, λ=300: 0.0951" in text


def test_a_skipped_ease_is_said_and_the_pooled_model_is_the_labelled_reference() -> None:
    skipped = {"method": "centralised", "skipped": "EASE^R skipped: the catalog is too big."}
    results = _with_references(_results(federated=0.08, dp_popularity=0.02), {})
    results["reference"] = skipped

    text = _render(results, width=220)

    assert "NDCG / fedrec pooled" in text and "NDCG / EASE^R" not in text
    assert "EASE^R skipped: the catalog is too big." in text
    assert _ratio_cells(text, "federated")[0] == "2.00x"  # 0.08 / 0.04
    assert "EASE^R, pooled" not in text


def test_each_merchants_serving_source_is_said_with_its_reason() -> None:
    results = _results(federated=0.015, dp_popularity=0.02)
    results["served"] = {
        "overall": _metrics(0.021),
        "per_merchant": {n: _metrics(0.021) for n in NAMES},
        "sources": {
            NAMES[0]: {"source": "popularity", "reason": "serves DP popularity: the best X"},
            NAMES[1]: {"source": "blend", "reason": "serves a blend (popularity weight 0.5): Y"},
        },
    }
    text = _render(results)
    assert "served (each merchant's choice)" in text  # its own row in the quality table
    assert f"{NAMES[0]} serves DP popularity: the best X" in text
    assert f"{NAMES[1]} serves a blend (popularity weight 0.5): Y" in text
    flat = " ".join(text.split())
    assert "Each merchant chose what it serves on its own held-out items" in flat
    assert "costs no budget" in flat
    assert "serves" not in _render(_results(federated=0.015, dp_popularity=0.02))


def test_a_merchant_refused_before_any_release_gets_a_row_without_figures() -> None:
    results = _results(federated=0.08, dp_popularity=0.02)
    results["privacy"]["per_merchant"][NAMES[1]] = {"dp-refused": 1.0}  # no account reported
    text = _render(results)
    row = next(line for line in text.splitlines() if NAMES[1] in line and "refused" in line)
    assert "refused in round 4" in row and "RDP" not in row
