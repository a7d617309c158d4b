"""Models that represent a user by their own parameters (a vector, a bias): MF, NeuMF.

Such a model only has to say how it scores (user, item) pairs and which of
its tables are indexed by user and by item; this base turns that into the
rest of the :class:`~common.models.base.Recommender` interface:

* examples: a user's interactions plus sampled negatives
  (:class:`~common.models.batches.UserBatch`);
* loss: BCE (implicit) or squared error (explicit) per row, averaged over the
  user's rows, plus L2 weight decay on the user and item rows the batch touches;
* fold-in: the user's local parameters fitted to the *expected* training loss
  by L-BFGS (:func:`fold_in_by_lbfgs`; MF overrides it with a closed form).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from common.models.base import LOCAL_VECTOR, Recommender, UserRepresentation
from common.models.batches import Batch, UserBatch, build_user_batch

if TYPE_CHECKING:
    from common.data.dataset import UserItemData
    from common.models.batches import TrainingSettings


class LocalVectorRecommender(Recommender):
    """A model whose users are rows of its own (local) tables; it scores (user, item) pairs."""

    USER_REPRESENTATION: ClassVar[UserRepresentation] = LOCAL_VECTOR

    @abstractmethod
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for pairs: ``users`` and ``items`` are (n,) int64; returns (n,)."""

    @abstractmethod
    def user_vectors(self) -> list[nn.Embedding]:
        """Embedding tables indexed by user (the rows that regularisation touches)."""

    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        """Logits of every catalog item for each user: (len(users), num_items).

        Loops over item chunks with :meth:`score`; models with a cheaper
        closed form (MF: a matmul) override it.
        """
        rows = []
        for start in range(0, self.num_items, chunk_items):
            items = torch.arange(start, min(start + chunk_items, self.num_items))
            pair_users = users.repeat_interleave(len(items))  # (n * chunk,)
            pair_items = items.repeat(len(users))  # (n * chunk,)
            rows.append(self.score(pair_users, pair_items).view(len(users), len(items)))
        return torch.cat(rows, dim=1)

    def make_batch(
        self,
        data: UserItemData,
        users: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        rng: np.random.Generator,
        item_pool: npt.NDArray[np.int64] | None = None,
    ) -> UserBatch:
        return build_user_batch(
            data,
            users,
            max_interactions_per_user=settings.max_interactions_per_user,
            num_negatives=settings.num_negatives,
            explicit=settings.loss == "mse",
            rng=rng,
            item_pool=item_pool,
        )

    def user_losses(self, batch: Batch, settings: TrainingSettings) -> torch.Tensor:
        """Mean over each user's rows plus L2 on the rows they touch: (B,)."""
        if not isinstance(batch, UserBatch):
            raise TypeError(
                f"{type(self).__name__} trains on a UserBatch, got {type(batch).__name__}."
            )
        users = batch.users[batch.row_slot]  # (n_rows,)
        logits = self.score(users, batch.row_items)  # (n_rows,)
        if settings.loss == "bce":
            row_loss = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
        else:
            row_loss = (logits - batch.labels) ** 2
        if settings.weight_decay > 0:
            item_sq = sum(table(batch.row_items).pow(2).sum(-1) for table in self.item_vectors())
            row_loss = row_loss + settings.weight_decay * item_sq
        per_user = torch.zeros(batch.size).index_add_(
            0, batch.row_slot, row_loss * batch.row_weight
        )
        if settings.weight_decay > 0:
            user_sq = sum(table(batch.users).pow(2).sum(-1) for table in self.user_vectors())
            per_user = per_user + settings.weight_decay * user_sq
        return per_user  # (B,)

    def fold_in_user(
        self,
        positives: npt.NDArray[np.int64],
        negatives: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        iterations: int,
    ) -> None:
        fold_in_by_lbfgs(
            self,
            self.score,
            self.user_vectors(),
            positives,
            negatives,
            settings,
            iterations=iterations,
        )


def fold_in_by_lbfgs(
    model: Recommender,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    user_tables: list[nn.Embedding],
    positives: npt.NDArray[np.int64],
    negatives: npt.NDArray[np.int64],
    settings: TrainingSettings,
    *,
    iterations: int,
) -> None:
    """Fit user 0's local parameters by L-BFGS to the expected training loss.

    With ``r`` negatives per positive drawn uniformly in training, a user's BCE
    loss averages to ``1/(1+r)`` x mean over their items of ``softplus(-s_i)``
    plus ``r/(1+r)`` x mean over ``negatives`` of ``softplus(s_j)``, plus the
    same L2 weight decay on ``user_tables``. Explicit ratings fit the items as
    liked (value 1, as fedrec's loader encodes recent items). Shared
    parameters are frozen (left not requiring grad); the model ends in eval mode.
    """
    local = model.local_parameters()
    for param in model.shared_parameters().values():
        param.requires_grad_(False)
    for param in local.values():
        param.requires_grad_(True)
    user = torch.zeros(1, dtype=torch.int64)
    pos_items = torch.as_tensor(positives)
    neg_items = torch.as_tensor(negatives)
    ratio = settings.num_negatives / (1.0 + settings.num_negatives)
    optimizer = torch.optim.LBFGS(
        list(local.values()), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        pos = score(user.expand(len(pos_items)), pos_items)
        if settings.loss == "bce":
            neg = score(user.expand(len(neg_items)), neg_items)
            loss = (1.0 - ratio) * F.softplus(-pos).mean() + ratio * F.softplus(neg).mean()
        else:  # explicit ratings: recent items count as liked (value 1, as fedrec's loader encodes)
            loss = (pos - 1.0).pow(2).mean()
        if settings.weight_decay > 0:
            loss = loss + settings.weight_decay * sum(
                table(user).pow(2).sum() for table in user_tables
            )
        loss.backward()
        return loss

    model.train()
    optimizer.step(closure)
    model.eval()
    for param in local.values():
        param.requires_grad_(False)
