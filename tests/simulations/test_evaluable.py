"""Runs with nobody to evaluate: refused up front, or reported without a KeyError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data, count_evaluable_users
from common.data.schema import Interactions
from common.errors import DataError
from simulations.cli import main
from simulations.merchants import check_evaluable, check_merchants_evaluable
from simulations.report import render_results
from simulations.runner import _federated_comparison


def _events(users: list[str], items: list[str]) -> Interactions:
    return Interactions(
        user_id=np.array(users, dtype=object),
        item_id=np.array(items, dtype=object),
        timestamp=np.arange(len(users), dtype=np.int64),
    )


def test_count_evaluable_users_needs_two_distinct_items() -> None:
    events = _events(["a", "a", "b", "b", "c"], ["x", "x", "x", "y", "z"])
    assert count_evaluable_users(events) == 1  # only b: a repeats one item, c has one


def test_check_evaluable_names_the_constraint_and_the_counts() -> None:
    with pytest.raises(DataError) as caught:
        check_evaluable(_events(["a", "a"], ["x", "x"]), source="one.csv")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (
            None,
            "no user has 2 or more distinct items (2 event(s), 1 user(s), 1 item(s)), so no "
            "test item can be held out and nothing could be evaluated (expected at least 1 "
            "user with 2 distinct items)",
        )
    ]
    assert "needs at least one user with 2 or more distinct items" in str(caught.value)


def test_partition_without_test_users_is_refused() -> None:
    events = _events(["a", "b"], ["x", "y"])
    data = build_user_item_data(events, ItemCatalog.from_keys(events.item_id))
    with pytest.raises(DataError) as caught:
        check_merchants_evaluable({"m0": data}, source="two.csv")
    assert "after partitioning into 1 merchant(s) no merchant has a user" in str(caught.value)


def test_simulate_refuses_a_one_row_file_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    data = tmp_path / "one.csv"
    data.write_text("user_id,item_id,timestamp\nu1,i1,978300760\n", encoding="utf-8")
    out = tmp_path / "run"
    # Execute
    code = main(["simulate", "--data", str(data), "--merchants", "1", "--out", str(out)])
    # Assert
    err = capsys.readouterr().err
    assert code == DataError.exit_code
    assert f"{data}, file: no user has 2 or more distinct items (1 event(s), 1 user(s)" in err
    assert "Traceback" not in err
    assert not out.exists() and not Path(f"{out}.incomplete").exists()


def test_federated_comparison_skips_merchants_without_test_users() -> None:
    history = {
        "rounds": [
            {
                "evaluate": {
                    "empty": {"eval-users": 0.0, "num-examples": 0.0, "eval-seconds": 0.1},
                    "full": {
                        "ndcg@10": 0.5,
                        "eval-users": 3.0,
                        "num-examples": 3.0,
                        "eval-seconds": 0.2,
                    },
                    "half": {"ndcg@10": 0.1, "eval-users": 1.0, "num-examples": 1.0},
                }
            }
        ]
    }
    comparison = _federated_comparison(history)
    assert comparison.overall == {"ndcg@10": pytest.approx((0.5 * 3 + 0.1) / 4), "eval-users": 4.0}


def test_report_without_any_evaluated_user_says_so() -> None:
    empty = {"overall": {"eval-users": 0.0}, "per_merchant": {"m0": {"eval-users": 0.0}}}
    results = {
        "top_k": 10,
        "federated": empty,
        "timing": {
            "federated_seconds": 1.0,
            "federated_train_seconds": 0.5,
            "baselines_seconds": 0,
        },
    }
    buffer = io.StringIO()
    render_results(results, console=Console(file=buffer, width=200), run_dir="run")
    assert "No evaluation possible: no merchant had a user with 2 or more distinct items" in (
        buffer.getvalue()
    )
