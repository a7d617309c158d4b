"""A new private run that would exceed a merchant's lifetime budget: the ClientApp refuses at
the item-count query, and the coordinator's failure names each merchant's reason (real
ClientApp, no Flower transport)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import make_client_app
from common.config import RunConfig
from common.constants import DP_REFUSED, NODE_STATE_DIR
from common.privacy.ledger import read_ledger
from server.rounds import transport
from server.rounds.prior import collect_item_prior
from server.rounds.records import FederationError, RunOptions
from tests.client.test_private_merchant import MODEL, PLAN, _merchant, data  # noqa: F401


def _deliver(monkeypatch: pytest.MonkeyPatch, states: dict[int, Path]) -> None:
    """Route each coordinator message to the real ClientApp of its node's state directory."""
    for attribute in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attribute, 1)
    app = make_client_app(dataclasses.replace(RunConfig(), model=MODEL))

    def send_and_receive(grid: Any, messages: list[Message], **_: Any) -> list[Message]:
        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            context = Context(
                run_id=7,
                node_id=node,
                node_config={NODE_STATE_DIR: str(states[node])},
                state=RecordDict(),
                run_config={},
            )
            replies.append(app(message, context))
        return replies

    monkeypatch.setattr(transport, "send_and_receive", send_and_receive)


def test_a_run_past_the_lifetime_budget_is_refused_at_the_count_query_and_the_operator_told(
    tmp_path: Path,
    data,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merchant = _merchant(tmp_path, data)
    spent = merchant.release_item_counts(PLAN, run="spring").privacy.epsilon
    merchant.store.write_policy(epsilon_max=2.0)  # summer alone plans 2, on top of spring
    _deliver(monkeypatch, {1: merchant.store.directory})

    with pytest.raises(FederationError) as failure:
        collect_item_prior(
            None,  # type: ignore[arg-type]
            [1],
            plan=PLAN,
            timeout=5.0,
            privacy_reports={},
            options=RunOptions(run_name="summer", poll=0.0),
        )
    message = str(failure.value)
    assert message.startswith(
        "No merchant released item counts (0 failed, 1 refused); the private run cannot start"
        "\n  shop refused: Merchant shop: run 'summer' plans epsilon 2; composed with the 1 "
        f"earlier run(s) of this state (lifetime epsilon {spent:.4f}) it would reach "
    )
    assert "above this merchant's lifetime budget epsilon-max=2 (policy.json)" in message
    entries = read_ledger(merchant.ledger.path).entries
    assert [e.kind for e in entries].count("reserve") == 1  # only spring's counts
    assert entries[-1].kind == "refusal" and entries[-1].body["run"] == "summer"


def test_a_first_private_run_on_fresh_state_releases_its_counts_through_the_same_path(
    tmp_path: Path,
    data,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merchant = _merchant(tmp_path, data)
    _deliver(monkeypatch, {1: merchant.store.directory})
    reports: dict[str, dict[str, Any]] = {}
    released = collect_item_prior(
        None,  # type: ignore[arg-type]
        [1],
        plan=PLAN,
        timeout=5.0,
        privacy_reports=reports,
        options=RunOptions(run_name="spring", poll=0.0),
    )
    prior, refused = released.prior, released.refused
    assert refused == set() and prior.counts.shape == (data.num_items,)
    assert released.untrained == ""
    assert DP_REFUSED not in reports["shop"] and reports["shop"]["dp-epsilon"] > 0
    assert [e.body["run"] for e in read_ledger(merchant.ledger.path).entries[1:]] == [
        "spring",
        "spring",
    ]  # reserve, commit
