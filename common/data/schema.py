"""The interaction schema every loader produces.

An event log is ``user_id, item_id, timestamp`` plus optional ``event_type``
(view / cart / purchase / rating), ``value`` (a rating or amount) and
``merchant_id``. Keys stay strings until a catalog encodes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

USER_ID: Final = "user_id"
ITEM_ID: Final = "item_id"
TIMESTAMP: Final = "timestamp"
EVENT_TYPE: Final = "event_type"
VALUE: Final = "value"
MERCHANT_ID: Final = "merchant_id"

REQUIRED_COLUMNS: Final = (USER_ID, ITEM_ID, TIMESTAMP)
OPTIONAL_COLUMNS: Final = (EVENT_TYPE, VALUE, MERCHANT_ID)
ALL_COLUMNS: Final = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

# Known event types, weakest to strongest signal.
EVENT_TYPES: Final = ("view", "click", "cart", "purchase", "rating")

StrArray = npt.NDArray[np.object_]


@dataclass(frozen=True)
class Interactions:
    """A validated event log: one row per event, columns as parallel arrays.

    Keys (user, item, merchant) are ``object`` arrays of ``str``; ``timestamp``
    is int64 seconds; ``value`` is float32 (NaN-free when present).
    """

    user_id: StrArray
    item_id: StrArray
    timestamp: npt.NDArray[np.int64]
    event_type: StrArray | None = None
    value: npt.NDArray[np.float32] | None = None
    merchant_id: StrArray | None = None

    def __post_init__(self) -> None:
        n = len(self.user_id)
        for name in ALL_COLUMNS:
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.user_id)

    @property
    def num_users(self) -> int:
        return len(np.unique(self.user_id))

    @property
    def num_items(self) -> int:
        return len(np.unique(self.item_id))

    def take(self, rows: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> Interactions:
        """Return the subset of rows selected by an index or boolean mask."""

        def pick(column: np.ndarray | None) -> np.ndarray | None:
            return None if column is None else column[rows]

        return Interactions(
            user_id=self.user_id[rows],
            item_id=self.item_id[rows],
            timestamp=self.timestamp[rows],
            event_type=pick(self.event_type),
            value=pick(self.value),
            merchant_id=pick(self.merchant_id),
        )
