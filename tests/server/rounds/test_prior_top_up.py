"""train-min-items: a federation whose counts clear too few items tops them up and trains
nothing (real ClientApps, no Flower transport)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from common.constants import COUNTS_ARRAY, DP_EPSILON, ITEM_COUNTS_KEY
from common.privacy.accountant import EVENT_COUNTS_TOP_UP, EVENT_ITEM_COUNTS
from common.privacy.counts import combine_releases
from common.privacy.ledger import read_ledger
from server.rounds import transport
from server.rounds.prior import collect_item_prior
from server.rounds.records import RunOptions
from tests.client.test_private_merchant import PLAN, _merchant, data  # noqa: F401
from tests.client.test_used_state_refusal import _deliver


def _federation(tmp_path, data, monkeypatch):  # noqa: F811
    merchants = {node: _merchant(tmp_path / f"m{node}", data) for node in (1, 2)}
    _deliver(monkeypatch, {node: m.store.directory for node, m in merchants.items()})
    released: list[tuple[str, np.ndarray, dict[str, Any]]] = []  # (merchant, counts, metrics)
    deliver = transport.send_and_receive

    def recording(grid: Any, messages: list[Any], **kwargs: Any) -> list[Any]:
        replies = deliver(grid, messages, **kwargs)
        for reply in replies:
            if ITEM_COUNTS_KEY in reply.content.array_records:
                counts = reply.content.array_records[ITEM_COUNTS_KEY][COUNTS_ARRAY].numpy()
                metrics = dict(reply.content.metric_records["metrics"])
                released.append((str(reply.metadata.src_node_id), counts, metrics))
        return replies

    monkeypatch.setattr(transport, "send_and_receive", recording)
    return merchants, released


def _prior(plan, reports):
    return collect_item_prior(
        None,  # type: ignore[arg-type]
        [1, 2],
        plan=plan,
        timeout=5.0,
        privacy_reports=reports,
        options=RunOptions(run_name="spring", poll=0.0),
    )


def _releases(merchant) -> list[str]:
    return [
        e.body["release"] for e in read_ledger(merchant.ledger.path).entries if e.kind == "reserve"
    ]


def test_too_few_cleared_items_top_up_every_merchant_and_the_prior_averages_both_releases(
    tmp_path,
    data,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merchants, released = _federation(tmp_path, data, monkeypatch)
    plan = dataclasses.replace(
        PLAN, privacy=dataclasses.replace(PLAN.privacy, train_min_items=data.num_items + 1)
    )
    reports: dict[str, dict[str, Any]] = {}
    result = _prior(plan, reports)

    assert "train-min-items" in result.untrained and "trains nothing" in result.untrained
    for merchant in merchants.values():
        assert _releases(merchant) == [EVENT_ITEM_COUNTS, EVENT_COUNTS_TOP_UP]
    for report in reports.values():  # each spent its whole epsilon, no more
        assert report[DP_EPSILON] == pytest.approx(plan.privacy.target_epsilon, rel=0.01)
    assert len(released) == 4  # two releases per merchant, first the counts, then the top-ups
    first, top_up = released[:2], released[2:]
    expected = np.zeros(data.num_items)
    for (node, c1, m1), (node_t, c2, m2) in zip(first, top_up, strict=True):
        assert node == node_t
        combined, _ = combine_releases(
            c1,
            m1["dp-count-noise-multiplier"],
            c2,
            m2["dp-count-top-up-noise-multiplier"],
        )
        expected += combined
    np.testing.assert_allclose(result.prior.counts, expected, rtol=1e-9)


def test_enough_cleared_items_or_no_minimum_train_as_before_without_a_top_up(
    tmp_path,
    data,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    merchants, released = _federation(tmp_path, data, monkeypatch)
    result = _prior(PLAN, {})  # train-min-items 0: always trains
    assert result.untrained == "" and len(released) == 2
    for merchant in merchants.values():
        assert _releases(merchant) == [EVENT_ITEM_COUNTS]
    np.testing.assert_allclose(result.prior.counts, released[0][1] + released[1][1])
