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
