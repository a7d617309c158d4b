"""Record-level examples (``privacy-unit=interaction``): one example per training interaction.

User-level examples are the model's own (:meth:`common.models.base.Recommender.make_batch`,
built in :mod:`common.models.batches`). Record-level DP-SGD samples interactions
instead, so its batches are built here: a :class:`~common.models.batches.UserBatch`
whose slot ``s`` is sampled interaction ``s``. They fit only models that represent
a user by a local vector (:data:`common.models.base.LOCAL_VECTOR`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from common.data.dataset import UserItemData
from common.models.batches import UserBatch


def build_interaction_batch(
    data: UserItemData,
    interactions: npt.NDArray[np.int64],
    *,
    num_negatives: int,
    explicit: bool,
    rng: np.random.Generator,
    item_pool: npt.NDArray[np.int64] | None = None,
) -> UserBatch:
    """One example per training interaction (record-level DP): its row plus its negatives.

    ``users`` then holds the owner of each sampled interaction (users may
    repeat); slot ``s`` is interaction ``s``. Interactions with items outside
    ``item_pool`` contribute no rows.
    """
    owners = np.searchsorted(data.train_indptr, interactions, side="right") - 1  # (B,)
    items = data.train_items[interactions]
    slots = np.arange(len(interactions))
    if item_pool is not None:
        allowed = np.zeros(data.num_items, dtype=bool)
        allowed[item_pool] = True
        slots = slots[allowed[items]]
    pos_items = items[slots]
    if explicit:
        slot, row_items = slots, pos_items
        labels = data.train_values[interactions[slots]].astype(np.float32)
        rows_each = 1
    else:
        neg_slot = np.repeat(slots, num_negatives)
        pool_size = data.num_items if item_pool is None else len(item_pool)
        neg = rng.integers(0, pool_size, size=len(neg_slot))
        neg_items = neg if item_pool is None else item_pool[neg]
        slot = np.concatenate([slots, neg_slot])
        row_items = np.concatenate([pos_items, neg_items])
        labels = np.concatenate(
            [np.ones(len(slots), np.float32), np.zeros(len(neg_slot), np.float32)]
        )
        rows_each = 1 + num_negatives
    return UserBatch(
        users=torch.as_tensor(owners, dtype=torch.int64),
        row_slot=torch.as_tensor(slot, dtype=torch.int64),
        row_items=torch.as_tensor(row_items, dtype=torch.int64),
        labels=torch.as_tensor(labels),
        row_weight=torch.full((len(slot),), 1.0 / rows_each, dtype=torch.float32),
    )
