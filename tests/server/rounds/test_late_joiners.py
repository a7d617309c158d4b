"""A merchant appearing mid-run gets the catalog once, then trains; one that fails sits out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import server.rounds.catalog as catalog_exchange
from common.config import FederationConfig
from common.data.catalog import ItemCatalog
from server.rounds.catalog import CatalogState, admit_late_joiners
from server.rounds.records import FederationError


def _message(node: int) -> Any:
    return SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node))


def test_late_joiners_get_the_catalog_first_refusers_sit_out_and_silent_ones_are_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[list[int]] = []
    online = {7, 13}  # node 9 is registered but not connected yet

    def fake_send_catalog(
        grid: Any, nodes: list[int], catalog: Any, *, refused: set[int], **_: Any
    ) -> dict[int, str]:
        asked.append(list(nodes))
        refused.update(n for n in nodes if n == 13)  # node 13 answers with an error
        return {n: f"shop-{n}" for n in nodes if n in online and n != 13}

    monkeypatch.setattr(catalog_exchange, "send_catalog", fake_send_catalog)
    ready: set[int] = {1, 2}
    refused: set[int] = set()
    names = {1: "shop-1", 2: "shop-2"}
    catalog = ItemCatalog(keys=("a", "b"))
    config = FederationConfig()

    def admit(nodes: list[int]) -> list[int]:
        kept = admit_late_joiners(
            None,  # type: ignore[arg-type]
            [_message(n) for n in nodes],
            CatalogState(ready=ready, refused=refused),
            names,
            catalog,
            federation=config,
            poll=0.0,
        )
        return [m.metadata.dst_node_id for m in kept]

    assert admit([1, 2]) == [1, 2] and asked == []  # nobody new: no extra exchange
    assert admit([1, 2, 7, 9, 13]) == [1, 2, 7]  # 7 joined; 9 silent; 13 refused
    assert asked == [[7, 9, 13]] and names[7] == "shop-7" and refused == {13}
    online.add(9)  # 9 comes up: asked again, and in; 13 is never asked again
    assert admit([1, 2, 7, 9, 13]) == [1, 2, 7, 9]
    assert asked == [[7, 9, 13], [9]]

    def refuse_all(*_: Any, **__: Any) -> dict[int, str]:
        raise FederationError("No merchant accepted the federation catalog (broken).")

    monkeypatch.setattr(catalog_exchange, "send_catalog", refuse_all)
    assert admit([1, 2, 7, 21]) == [1, 2, 7]  # a failed exchange never stops the run


def test_a_resumed_run_waits_for_merchants_behind_stale_sessions_and_fails_only_when_all_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a coordinator restart Flower still lists the merchants' old sessions: the
    SuperLink answers "unavailable" for them until they come back under new node ids."""
    listed = [[11, 12], [11, 12], [21, 22]]  # the stale ids, then the new sessions

    def fake_send_catalog(
        grid: Any, nodes: list[int], catalog: Any, *, refused: set[int], **_: Any
    ) -> dict[int, str]:
        if set(nodes) <= {11, 12}:
            raise FederationError(
                "No merchant accepted the federation catalog (node-1: Node Unavailable)."
            )
        return {n: f"shop-{n}" for n in nodes}

    grid = SimpleNamespace(get_node_ids=lambda: listed.pop(0) if len(listed) > 1 else listed[0])
    monkeypatch.setattr(catalog_exchange, "send_catalog", fake_send_catalog)
    monkeypatch.setattr(catalog_exchange.time, "sleep", lambda seconds: None)
    state, names = CatalogState(), {}
    config = FederationConfig(min_nodes=2, node_wait_timeout=30.0)

    catalog_exchange.confirm_catalog(
        grid,
        [11, 12],
        ItemCatalog(keys=("a",)),
        state,
        names,
        federation=config,
        poll=0.0,  # type: ignore[arg-type]
    )
    assert state.ready == {21, 22} and names == {21: "shop-21", 22: "shop-22"}

    def refuse(grid: Any, nodes: list[int], catalog: Any, *, refused: set[int], **_: Any) -> Any:
        refused.update(nodes)  # each merchant answered with its own error
        raise FederationError("No merchant accepted the federation catalog (shop: bad digest).")

    monkeypatch.setattr(catalog_exchange, "send_catalog", refuse)
    with pytest.raises(FederationError, match="bad digest"):
        catalog_exchange.confirm_catalog(
            SimpleNamespace(get_node_ids=lambda: [5, 6]),
            [5, 6],
            ItemCatalog(keys=("a",)),
            CatalogState(),
            {},
            federation=FederationConfig(min_nodes=2, node_wait_timeout=3600.0),
            poll=0.0,
        )  # at once, not after node-wait-timeout
