"""Models that represent a user by the items they interacted with, most recent first.

A party's histories come from its own training data (:meth:`bind`, time
ordered, at most ``max_history`` items per user, with each item's event type
when the log has them) and never leave it: the
model holds them as plain attributes, outside ``state_dict``. Training is
next-item prediction: a batch holds sampled target positions of each user's
history (:class:`~common.models.batches.SequenceBatch`); a subclass says how
it scores a position from the items before it (:meth:`user_losses`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from common.data.schema import EVENT_TYPES
from common.models.base import RECENT_ITEMS, Recommender, UserRepresentation
from common.models.batches import SequenceBatch, build_sequence_batch

if TYPE_CHECKING:
    from common.data.dataset import UserItemData
    from common.models.batches import TrainingSettings


class RecentItemsRecommender(Recommender):
    """Holds each user's recent items; samples next-item positions from them to train."""

    USER_REPRESENTATION: ClassVar[UserRepresentation] = RECENT_ITEMS

    def __init__(self, *, num_users: int, num_items: int, max_history: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items)
        self.pad = num_items  # the padding id of item-input tables (sized num_items + 1)
        self.no_event = len(EVENT_TYPES)  # event-type id of an item whose type is not known
        self.max_history = max_history
        self.sequences = torch.full((num_users, 1), self.pad, dtype=torch.int64)  # (users, L)
        self.event_sequences = torch.full((num_users, 1), self.no_event, dtype=torch.int64)
        self.lengths = torch.zeros(num_users, dtype=torch.int64)  # (users,)

    def example_sizes(self) -> npt.NDArray[np.int64]:
        """Each user's bound history length: what a batch's width (and cost) follows."""
        return self.lengths.numpy()

    def bind(self, data: UserItemData) -> None:
        """Use ``data``'s training items (time-ordered) as each user's history."""
        self.bind_histories(data.train_indptr, data.train_items, events=data.train_events)

    def bind_histories(
        self,
        indptr: npt.NDArray[np.int64],
        items: npt.NDArray[np.int64],
        *,
        events: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Histories as CSR, oldest item first: user ``u`` has ``items[indptr[u]:indptr[u+1]]``
        (the last ``max_history`` of them are kept), with each item's event type (an index
        into EVENT_TYPES) when known. Serving binds a request's items this way."""
        users = len(indptr) - 1
        if users > self.num_users:
            raise ValueError(f"{users} histories for a model of {self.num_users} users")
        counts = np.zeros(self.num_users, dtype=np.int64)
        counts[:users] = np.minimum(np.diff(indptr), self.max_history)
        width = max(1, int(counts.max(initial=0)))
        sequences = np.full((self.num_users, width), self.pad, dtype=np.int64)
        kinds = np.full((self.num_users, width), self.no_event, dtype=np.int64)
        for user in np.flatnonzero(counts):
            end = indptr[user + 1]
            sequences[user, : counts[user]] = items[end - counts[user] : end]
            if events is not None:
                kinds[user, : counts[user]] = events[end - counts[user] : end]
        kinds[kinds < 0] = self.no_event
        self.sequences = torch.as_tensor(sequences)
        self.event_sequences = torch.as_tensor(kinds)
        self.lengths = torch.as_tensor(counts)

    def make_batch(
        self,
        data: UserItemData,
        users: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        rng: np.random.Generator,
        item_pool: npt.NDArray[np.int64] | None = None,
    ) -> SequenceBatch:
        """``positions_per_user`` target positions of each user's bound history.

        Targets are the user's own items, so ``item_pool`` restricts nothing here.
        """
        return build_sequence_batch(
            self.lengths.numpy(), users, positions=settings.positions_per_user, rng=rng
        )
