"""One party's encoded interactions, split leave-last-out per user.

A :class:`UserItemData` is what a merchant trains and evaluates on: local user
indices ``0..num_users-1`` (the keys stay with the merchant), shared item
indices from the federation catalog, training pairs grouped by user (CSR) and
at most one held-out test item per user (their last, by timestamp).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from common.data.catalog import ItemCatalog
from common.data.schema import EVENT_TYPES, Interactions

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class UserItemData:
    """Encoded train/test interactions of one party.

    ``train_indptr`` has shape ``(num_users + 1,)``; the training items of user
    ``u`` are ``train_items[train_indptr[u]:train_indptr[u + 1]]``. ``test_users``
    and ``test_items`` have one entry per evaluated user (users with at least two
    distinct items); the test item never appears among that user's training items.
    ``train_events`` / ``test_events`` give each pair's event type (view, cart,
    purchase, ...: an index into :data:`~common.data.schema.EVENT_TYPES`) when
    the log has an ``event_type`` column, else None.
    """

    user_keys: tuple[str, ...]
    num_items: int
    train_indptr: IntArray  # (num_users + 1,)
    train_items: IntArray  # (num_train,)
    train_values: FloatArray  # (num_train,)
    test_users: IntArray  # (num_test,)
    test_items: IntArray  # (num_test,)
    test_values: FloatArray  # (num_test,)
    unknown_items: int = 0
    # Event type of each pair (index into schema.EVENT_TYPES), when the log has them.
    train_events: IntArray | None = None  # (num_train,)
    test_events: IntArray | None = None  # (num_test,)

    @property
    def num_users(self) -> int:
        return len(self.user_keys)

    @property
    def num_train(self) -> int:
        return len(self.train_items)

    @property
    def train_users(self) -> IntArray:
        """User index of every training pair, shape ``(num_train,)``."""
        counts = np.diff(self.train_indptr)
        return np.repeat(np.arange(self.num_users, dtype=np.int64), counts)

    def items_of(self, user: int) -> IntArray:
        return self.train_items[self.train_indptr[user] : self.train_indptr[user + 1]]

    def train_csr(self, users: IntArray) -> tuple[IntArray, IntArray]:
        """Training items of ``users`` as CSR ``(indptr (len(users)+1,), indices)``, vectorised."""
        starts = self.train_indptr[users]
        counts = self.train_indptr[users + 1] - starts
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        positions = np.arange(indptr[-1]) - np.repeat(indptr[:-1] - starts, counts)
        return indptr, self.train_items[positions]

    def histories(self) -> tuple[IntArray, IntArray, IntArray | None]:
        """Each user's items in time order as CSR ``(indptr, items, event types or None)``:
        the training items (stored oldest first), then the held-out item, the latest."""
        test = np.zeros(self.num_users, dtype=np.int64)
        np.add.at(test, self.test_users, 1)
        train_counts = np.diff(self.train_indptr)
        indptr = np.concatenate([[0], np.cumsum(train_counts + test)]).astype(np.int64)
        slot = np.repeat(indptr[:-1], train_counts) + (
            np.arange(self.num_train) - np.repeat(self.train_indptr[:-1], train_counts)
        )
        last = indptr[self.test_users + 1] - 1
        items = np.empty(int(indptr[-1]), dtype=np.int64)
        items[slot], items[last] = self.train_items, self.test_items
        if self.train_events is None or self.test_events is None:
            return indptr, items, None
        events = np.empty(int(indptr[-1]), dtype=np.int64)
        events[slot], events[last] = self.train_events, self.test_events
        return indptr, items, events

    def save(self, directory: str | os.PathLike[str], *, data_file: str, users_file: str) -> None:
        """Write both files atomically (a crash leaves the previous version, never half)."""
        import io

        from common.fileio import atomic_write_bytes

        directory = Path(directory)
        buffer = io.BytesIO()
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "num_items": np.asarray(self.num_items, dtype=np.int64),
            "unknown_items": np.asarray(self.unknown_items, dtype=np.int64),
            "train_indptr": self.train_indptr,
            "train_items": self.train_items,
            "train_values": self.train_values,
            "test_users": self.test_users,
            "test_items": self.test_items,
            "test_values": self.test_values,
        }
        if self.train_events is not None and self.test_events is not None:
            arrays |= {"train_events": self.train_events, "test_events": self.test_events}
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(directory / data_file, buffer.getvalue())
        atomic_write_bytes(directory / users_file, json.dumps(list(self.user_keys)).encode("utf-8"))

    @classmethod
    def load(
        cls, directory: str | os.PathLike[str], *, data_file: str, users_file: str
    ) -> UserItemData:
        directory = Path(directory)
        with np.load(directory / data_file) as arrays:
            fields = {name: arrays[name] for name in arrays.files}
        user_keys = tuple(json.loads((directory / users_file).read_text(encoding="utf-8")))
        return cls(
            user_keys=user_keys,
            num_items=int(fields.pop("num_items")),
            unknown_items=int(fields.pop("unknown_items")),
            **fields,
        )


def build_user_item_data(
    events: Interactions, catalog: ItemCatalog, *, hold_out: bool = True
) -> UserItemData:
    """Encode events through ``catalog``, de-duplicate, and split leave-last-out.

    Repeated (user, item) events collapse to one pair carrying the latest
    timestamp and that event's value and event type. Each user with two or more distinct items
    gives their latest item to the test set (ties broken by catalog index);
    users with a single item only train. Items outside the catalog are counted
    in ``unknown_items`` and skipped.
    """
    encoded = catalog.encode(events.item_id)
    known = encoded.indices >= 0
    values = events.value if events.value is not None else np.ones(len(events), np.float32)
    frame = pd.DataFrame(
        {
            "user": events.user_id[known],
            "item": encoded.indices[known],
            "ts": events.timestamp[known],
            "value": values[known].astype(np.float32),
            "event": _event_codes(events.event_type, len(events))[known],
        }
    )
    user_codes, user_keys = pd.factorize(frame["user"], sort=True)
    frame["user"] = user_codes.astype(np.int64)
    # Latest event per (user, item) wins; order by user, time, item for a stable split.
    frame = frame.sort_values(["user", "ts", "item"], kind="stable")
    frame = frame.drop_duplicates(["user", "item"], keep="last")
    users = frame["user"].to_numpy(np.int64)
    items = frame["item"].to_numpy(np.int64)
    vals = frame["value"].to_numpy(np.float32)
    kinds = frame["event"].to_numpy(np.int64)
    typed = events.event_type is not None
    num_users = len(user_keys)
    counts = np.bincount(users, minlength=num_users)
    last = np.cumsum(counts) - 1  # position of each user's latest pair
    is_test = np.zeros(len(users), dtype=bool)
    if hold_out:
        is_test[last[counts >= 2]] = True
    train_counts = np.bincount(users[~is_test], minlength=num_users)
    indptr = np.zeros(num_users + 1, dtype=np.int64)
    np.cumsum(train_counts, out=indptr[1:])
    return UserItemData(
        user_keys=tuple(str(k) for k in user_keys),
        num_items=len(catalog),
        train_indptr=indptr,
        train_items=items[~is_test],
        train_values=vals[~is_test],
        test_users=users[is_test],
        test_items=items[is_test],
        test_values=vals[is_test],
        unknown_items=encoded.unknown_count,
        train_events=kinds[~is_test] if typed else None,
        test_events=kinds[is_test] if typed else None,
    )


def _event_codes(event_type: npt.NDArray[np.object_] | None, count: int) -> IntArray:
    """Index of each event's type in EVENT_TYPES (validated at load); -1 without the column."""
    if event_type is None:
        return np.full(count, -1, dtype=np.int64)
    lookup = {name: i for i, name in enumerate(EVENT_TYPES)}
    return np.asarray([lookup.get(str(e), -1) for e in event_type], dtype=np.int64)


def count_evaluable_users(events: Interactions) -> int:
    """Users with at least two distinct items: those leave-last-out can hold a test item out for.

    The same rule as :func:`build_user_item_data`, counted on raw keys before any
    encoding, so a run can refuse before it does any work.
    """
    pairs = pd.DataFrame({"user": events.user_id, "item": events.item_id}).drop_duplicates()
    per_user = pairs.groupby("user", sort=False).size()
    return int((per_user >= 2).sum())


def concat_user_item_data(parts: list[UserItemData]) -> tuple[UserItemData, IntArray]:
    """Pool several parties' data (users stay distinct). Returns data and user offsets.

    ``offsets[p]`` is the pooled index of party ``p``'s user 0; ``offsets[-1]`` is
    the pooled user count.
    """
    if not parts:
        raise ValueError("nothing to concatenate")
    num_items = parts[0].num_items
    if any(p.num_items != num_items for p in parts):
        raise ValueError("all parts must share one item catalog")
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([p.num_users for p in parts], out=offsets[1:])
    train_offsets = np.cumsum([0] + [p.num_train for p in parts])
    indptr = np.concatenate(
        [[0]] + [p.train_indptr[1:] + train_offsets[i] for i, p in enumerate(parts)]
    ).astype(np.int64)
    return (
        UserItemData(
            user_keys=tuple(k for p in parts for k in p.user_keys),
            num_items=num_items,
            train_indptr=indptr,
            train_items=np.concatenate([p.train_items for p in parts]),
            train_values=np.concatenate([p.train_values for p in parts]),
            test_users=np.concatenate([p.test_users + offsets[i] for i, p in enumerate(parts)]),
            test_items=np.concatenate([p.test_items for p in parts]),
            test_values=np.concatenate([p.test_values for p in parts]),
            unknown_items=sum(p.unknown_items for p in parts),
            **_concat_events(parts),
        ),
        offsets,
    )


def _concat_events(parts: list[UserItemData]) -> dict[str, IntArray | None]:
    """Pooled event types, or none unless every part has them."""
    if any(p.train_events is None or p.test_events is None for p in parts):
        return {"train_events": None, "test_events": None}
    return {
        "train_events": np.concatenate([p.train_events for p in parts]),  # type: ignore[misc]
        "test_events": np.concatenate([p.test_events for p in parts]),  # type: ignore[misc]
    }
