"""The examples a model trains on: one batch shape per way of representing a user.

A *local-vector* model (:mod:`common.models.local_vector`) learns from a
user's interactions: at most ``max_interactions_per_user`` of them (sampled
without replacement if more) plus ``num_negatives`` uniformly sampled items
per positive. A batch of users is flattened into rows, with ``row_slot``
saying which user of the batch a row belongs to, so per-user losses are a
segment sum (:class:`UserBatch`).

A *recent-items* model (:mod:`common.models.recent_items`) learns to predict
a user's next item: ``positions_per_user`` positions of their time-ordered
items, each predicted from the items before it (:class:`SequenceBatch`).

A model with a sampled softmax also draws ``K`` negatives per user, shared by
that user's positions (:func:`draw_negatives`).

Either way one batch row belongs to one user, so the batch loss is a sum of
per-user terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from common.data.dataset import UserItemData


class TrainingSettings(Protocol):
    """The training settings a model reads (:class:`common.config.TrainConfig` has them)."""

    @property
    def loss(self) -> str:
        """``"bce"`` (implicit feedback, sampled negatives) or ``"mse"`` (explicit ratings)."""

    @property
    def weight_decay(self) -> float: ...

    @property
    def num_negatives(self) -> int: ...

    @property
    def max_interactions_per_user(self) -> int: ...

    @property
    def positions_per_user(self) -> int: ...


@dataclass(frozen=True)
class UserBatch:
    """Rows of a batch of users. ``users`` is (B,); every row field is (n_rows,)."""

    users: torch.Tensor  # (B,) local user indices
    row_slot: torch.Tensor  # (n_rows,) position of the row's user in ``users``
    row_items: torch.Tensor  # (n_rows,)
    labels: torch.Tensor  # (n_rows,) 1/0 for implicit, the rating for explicit
    row_weight: torch.Tensor  # (n_rows,) 1 / rows of that user: a user's rows sum to 1

    @property
    def size(self) -> int:
        return int(self.users.numel())


@dataclass(frozen=True)
class SequenceBatch:
    """Sampled target positions of a batch of users (recent-items models), one row per user."""

    users: torch.Tensor  # (B,) local user indices
    ends: torch.Tensor  # (B, M) target positions in each user's history; -1 = none
    negatives: torch.Tensor | None = None  # (B, K) items each user's targets compete with

    @property
    def size(self) -> int:
        return int(self.users.numel())

    @property
    def row_slot(self) -> torch.Tensor:
        """Every shared module is called with the batch's users as leading dimension."""
        return torch.arange(self.size, dtype=torch.int64)

    @property
    def row_items(self) -> torch.Tensor:
        """The valid target positions (their count is the batch's examples)."""
        return self.ends[self.ends > 0]


Batch = UserBatch | SequenceBatch


def build_user_batch(
    data: UserItemData,
    users: npt.NDArray[np.int64],
    *,
    max_interactions_per_user: int,
    num_negatives: int,
    explicit: bool,
    rng: np.random.Generator,
    item_pool: npt.NDArray[np.int64] | None = None,
) -> UserBatch:
    """Flatten the examples of ``users`` into rows (vectorised; no loop over users).

    With ``item_pool``, only interactions with pool items are used and
    negatives are drawn from the pool (private training restricted to items
    frequent enough to learn).
    """
    starts = data.train_indptr[users]
    counts = data.train_indptr[users + 1] - starts  # (B,)
    offsets = np.cumsum(counts) - counts  # (B,) first row of each user's span
    span_slot = np.repeat(np.arange(len(users)), counts)  # (sum counts,)
    span_index = np.repeat(starts, counts) + np.arange(len(span_slot)) - offsets[span_slot]
    if item_pool is not None:
        allowed = np.zeros(data.num_items, dtype=bool)
        allowed[item_pool] = True
        usable = allowed[data.train_items[span_index]]
        span_slot, span_index = span_slot[usable], span_index[usable]
        counts = np.bincount(span_slot, minlength=len(users))
        offsets = np.cumsum(counts) - counts
    # Random order inside each user's span, then keep the first `cap` of each.
    order = np.lexsort((rng.random(len(span_slot)), span_slot))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - offsets[span_slot[order]]
    keep = rank < max_interactions_per_user
    pos_slot = span_slot[keep]
    pos_index = span_index[keep]
    pos_items = data.train_items[pos_index]
    kept = np.minimum(counts, max_interactions_per_user)  # (B,)

    if explicit:
        slot, items = pos_slot, pos_items
        labels = data.train_values[pos_index].astype(np.float32)
        rows_per_user = kept
    else:
        neg_slot = np.repeat(pos_slot, num_negatives)
        if item_pool is None:
            neg_items = rng.integers(0, data.num_items, size=len(neg_slot))
        else:
            neg_items = item_pool[rng.integers(0, len(item_pool), size=len(neg_slot))]
        slot = np.concatenate([pos_slot, neg_slot])
        items = np.concatenate([pos_items, neg_items])
        labels = np.concatenate(
            [np.ones(len(pos_slot), np.float32), np.zeros(len(neg_slot), np.float32)]
        )
        rows_per_user = kept * (1 + num_negatives)
    weight = 1.0 / np.maximum(rows_per_user, 1)[slot]
    return UserBatch(
        users=torch.as_tensor(users, dtype=torch.int64),
        row_slot=torch.as_tensor(slot, dtype=torch.int64),
        row_items=torch.as_tensor(items, dtype=torch.int64),
        labels=torch.as_tensor(labels),
        row_weight=torch.as_tensor(weight, dtype=torch.float32),
    )


def build_sequence_batch(
    lengths: npt.NDArray[np.int64],
    users: npt.NDArray[np.int64],
    *,
    positions: int,
    rng: np.random.Generator,
) -> SequenceBatch:
    """Up to ``positions`` target positions per user, uniform over 1..length-1 (with
    replacement); no more per user than the batch's longest history has targets.

    ``lengths``: each user's history length. A user with fewer than two items
    has nothing to predict from and gets no position (-1).
    """
    length = lengths[users]  # (B,)
    width = max(1, min(positions, int(length.max(initial=1)) - 1))
    draws = rng.random((len(users), width))  # (B, M)
    ends = 1 + np.floor(draws * np.maximum(length - 1, 1)[:, None]).astype(np.int64)
    ends[length < 2] = -1
    return SequenceBatch(
        users=torch.as_tensor(users, dtype=torch.int64), ends=torch.as_tensor(ends)
    )


def build_prefix_batch(
    lengths: npt.NDArray[np.int64], users: npt.NDArray[np.int64]
) -> SequenceBatch:
    """Every target position of each user: 1..length-1 (all prefixes of the history).

    ``ends`` is (B, W) with W the batch's longest history minus one; a user's
    positions past their own history are -1.
    """
    length = lengths[users]  # (B,)
    width = max(1, int(length.max(initial=1)) - 1)
    ends = np.broadcast_to(np.arange(1, width + 1), (len(users), width)).copy()  # (B, W)
    ends[ends >= length[:, None]] = -1
    return SequenceBatch(
        users=torch.as_tensor(users, dtype=torch.int64), ends=torch.as_tensor(ends)
    )


def draw_negatives(
    num_users: int,
    count: int,
    *,
    num_items: int,
    rng: np.random.Generator,
    item_pool: npt.NDArray[np.int64] | None = None,
) -> torch.Tensor:
    """``count`` items per user, uniform over the catalog (or ``item_pool``), with
    replacement and independent of the data: (num_users, count)."""
    if item_pool is None:
        drawn = rng.integers(0, num_items, size=(num_users, count))
    else:
        drawn = item_pool[rng.integers(0, len(item_pool), size=(num_users, count))]
    return torch.as_tensor(drawn, dtype=torch.int64)
