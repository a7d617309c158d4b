"""Shared fixtures: tiny, hand-checkable data made by the project itself."""

from __future__ import annotations

import numpy as np
import pytest

from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData, build_user_item_data
from common.data.schema import Interactions


def make_events(
    rows: list[tuple[str, str, int]],
    merchants: list[str] | None = None,
    *,
    event_types: list[str] | None = None,
) -> Interactions:
    users, items, times = zip(*rows, strict=True)
    return Interactions(
        user_id=np.asarray(users, dtype=object),
        item_id=np.asarray(items, dtype=object),
        timestamp=np.asarray(times, dtype=np.int64),
        event_type=None if event_types is None else np.asarray(event_types, dtype=object),
        merchant_id=None if merchants is None else np.asarray(merchants, dtype=object),
    )


@pytest.fixture
def tiny_events() -> Interactions:
    # u1: a(1) b(2) c(3)  -> test c ; u2: b(5) a(4) b(9) -> dedupe b@9, test b ; u3: d only
    return make_events(
        [
            ("u1", "a", 1),
            ("u1", "b", 2),
            ("u1", "c", 3),
            ("u2", "b", 5),
            ("u2", "a", 4),
            ("u2", "b", 9),
            ("u3", "d", 7),
        ]
    )


@pytest.fixture
def tiny_data(tiny_events: Interactions) -> UserItemData:
    return build_user_item_data(tiny_events, ItemCatalog.from_keys(tiny_events.item_id))
