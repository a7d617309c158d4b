"""A history model: a user is the items they interacted with, most recent first.

``score(u, i) = (long_u + short_u + p_u) . q_i + b_i`` where

* ``long_u`` is the mean of ``history_long`` vectors over the user's last
  ``history_max`` training items (their lasting taste);
* ``short_u = sum_k decay^(k-1) history_short[s_{-k}]`` over their ``history_window``
  most recent items (what they are doing now: on real logs the next item
  follows the last few far more than a static profile predicts);
* ``p_u`` is a local residual (``user_embedding``, zero at start);
* ``q_i, b_i`` are the output item vectors and biases (``item_out``, a Linear).

Every item table is shared; only ``user_embedding`` is local. A party's
histories come from its own training data and never leave it
(:class:`~common.models.recent_items.RecentItemsRecommender`).

Training is next-item prediction over the whole catalog: for a sampled
position ``t`` of a user's time-ordered items, the context is the items before
``t`` and the target ``s_t`` (softmax cross-entropy over every item). A user's
loss is the mean over their sampled positions, one term of the batch loss, so
per-user DP-SGD clips it like any other: every shared parameter enters through
an ``nn.Embedding`` or the ``nn.Linear`` output, called with the batch's users
as leading dimension (:mod:`client.training.clipping`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from common.models.base import ModelConfig
from common.models.batches import Batch, SequenceBatch
from common.models.local_vector import fold_in_by_lbfgs
from common.models.recent_items import RecentItemsRecommender

if TYPE_CHECKING:
    from common.models.batches import TrainingSettings


class HistoryModel(RecentItemsRecommender):
    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ("user_embedding.weight",)

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items, max_history=config.history_max)
        dim = config.embedding_dim
        self.window = config.history_window
        self.decay = torch.tensor([config.history_decay**k for k in range(self.window)])  # (K,)
        self.user_embedding = nn.Embedding(num_users, dim)  # (users, dim), local
        self.history_long = nn.Embedding(num_items + 1, dim)  # (items + pad, dim)
        self.history_short = nn.Embedding(num_items + 1, dim)  # (items + pad, dim)
        self.item_out = nn.Linear(dim, num_items)  # weight (items, dim), bias (items,)

    def initialised(self) -> None:
        with torch.no_grad():
            self.user_embedding.weight.zero_()  # a user starts as their history alone

    # --- the user vector ----------------------------------------------------------------
    def context(self, users: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """User vectors from the items before position ``ends`` ((B, M)): (B, M, dim)."""
        seq = self.sequences[users]  # (B, L)
        batch, positions = ends.shape
        mask = (seq != self.pad).unsqueeze(-1).to(self.decay.dtype)  # (B, L, 1)
        prefix = torch.cumsum(self.history_long(seq) * mask, dim=1)  # (B, L, dim)
        before = (ends - 1).clamp(min=0)  # (B, M)
        summed = torch.gather(
            prefix, 1, before.unsqueeze(-1).expand(batch, positions, prefix.shape[-1])
        )
        has = (ends > 0).unsqueeze(-1).to(summed.dtype)
        long = summed * has / ends.clamp(min=1).unsqueeze(-1).to(summed.dtype)
        back = ends.unsqueeze(-1) - torch.arange(1, self.window + 1)  # (B, M, K)
        recent = torch.gather(seq, 1, back.clamp(min=0).view(batch, -1)).view(back.shape)
        weight = (back >= 0).to(self.decay.dtype) * self.decay  # (B, M, K)
        short = (self.history_short(recent) * weight.unsqueeze(-1)).sum(2)  # (B, M, dim)
        return long + short + self.user_embedding(users).unsqueeze(1)

    def user_vectors_now(self, users: torch.Tensor) -> torch.Tensor:
        """Each user's vector after all their history: (B, dim)."""
        return self.context(users, self.lengths[users].unsqueeze(1))[:, 0]

    # --- Recommender ---------------------------------------------------------------------
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        vectors = self.user_vectors_now(users)  # (n, dim)
        return (vectors * self.item_out.weight[items]).sum(-1) + self.item_out.bias[items]

    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        return self.item_out(self.user_vectors_now(users))  # (n, items)

    def sequence_loss(self, users: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        """Per-user mean next-item cross-entropy at positions ``ends`` ((B, M), -1 = none)."""
        valid = ends > 0  # a target needs at least one item before it
        safe = ends.clamp(min=1)
        logits = self.item_out(self.context(users, safe))  # (B, M, items)
        targets = torch.gather(self.sequences[users], 1, safe)  # (B, M)
        targets = torch.where(valid, targets, torch.zeros_like(targets))  # no pad as target
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(
            ends.shape
        )
        loss = loss * valid.to(loss.dtype)
        return loss.sum(1) / valid.sum(1).clamp(min=1).to(loss.dtype)  # (B,)

    def user_losses(self, batch: Batch, settings: TrainingSettings) -> torch.Tensor:
        """Next-item softmax at the batch's positions plus L2 on the users' residuals: (B,)."""
        if not isinstance(batch, SequenceBatch):
            raise TypeError(f"HistoryModel trains on SequenceBatch, got {type(batch).__name__}")
        per_user = self.sequence_loss(batch.users, batch.ends)  # (B,)
        if settings.weight_decay > 0:
            per_user = per_user + settings.weight_decay * self.user_embedding(batch.users).pow(
                2
            ).sum(-1)
        return per_user

    def fold_in_user(
        self,
        positives: npt.NDArray[np.int64],
        negatives: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        iterations: int,
    ) -> None:
        """Fit the residual ``p_u`` of user 0 (whose bound history is empty) by L-BFGS,
        as a local-vector model does (:func:`~common.models.local_vector.fold_in_by_lbfgs`)."""
        fold_in_by_lbfgs(
            self,
            self.score,
            self.user_vectors(),
            positives,
            negatives,
            settings,
            iterations=iterations,
        )

    def user_vectors(self) -> list[nn.Embedding]:
        """The user-indexed (local) table: the residuals."""
        return [self.user_embedding]

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.history_long, self.history_short]
