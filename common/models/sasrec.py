"""SASRec: a user is their recent items, read by causal self-attention.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018), with
pre-LayerNorm blocks and a full softmax over the catalog:

* the input is the user's time-ordered training items (at most ``history-max``,
  the most recent), embedded by ``item_embedding`` (scaled by sqrt(dim)) plus a
  learned position (``position``);
* ``sasrec-blocks`` blocks, each causal multi-head self-attention
  (``sasrec-heads`` heads) and a position-wise feed-forward layer, both
  residual, with ``dropout``;
* the hidden state after item ``t`` scores every catalog item by a dot product
  with the same ``item_embedding`` rows (tied input and output), trained by
  next-item cross-entropy at sampled positions
  (:class:`~common.models.batches.SequenceBatch`).

Every parameter is shared: a user's representation is their own sequence,
which stays with the party that holds it
(:class:`~common.models.recent_items.RecentItemsRecommender`), so a new user
is served from their recent items with nothing to fit. Per-user clipping of
LayerNorm and attention is not built yet (:attr:`PER_USER_CLIPPING`): private
training refuses this model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from common.models.base import ModelConfig
from common.models.batches import Batch, SequenceBatch
from common.models.recent_items import RecentItemsRecommender

if TYPE_CHECKING:
    from common.models.batches import TrainingSettings


class _Block(nn.Module):
    """Pre-LayerNorm causal self-attention and feed-forward, each with a residual."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.feed_norm = nn.LayerNorm(dim)
        self.feed_in = nn.Linear(dim, dim)
        self.feed_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape  # (B, L, dim)
        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)  # each (B, L, dim)

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, heads, L, dim / heads)
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(
            split(q),
            split(k),
            split(v),
            is_causal=True,  # position t reads items 0..t only
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + F.dropout(
            self.out(attended.transpose(1, 2).reshape(batch, length, dim)),
            self.dropout,
            self.training,
        )
        hidden = F.dropout(F.gelu(self.feed_in(self.feed_norm(x))), self.dropout, self.training)
        return x + F.dropout(self.feed_out(hidden), self.dropout, self.training)


class SASRec(RecentItemsRecommender):
    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ()
    PER_USER_CLIPPING: ClassVar[bool] = False

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items, max_history=config.history_max)
        dim = config.embedding_dim
        if dim % config.sasrec_heads:
            raise ValueError(
                f"embedding-dim {dim} must be a multiple of sasrec-heads {config.sasrec_heads}."
            )
        self.scale = math.sqrt(dim)
        self.dropout = config.dropout
        self.item_embedding = nn.Embedding(num_items + 1, dim)  # (items + pad, dim), tied output
        self.position = nn.Embedding(config.history_max, dim)  # (L, dim)
        self.blocks = nn.ModuleList(
            _Block(dim, config.sasrec_heads, config.dropout) for _ in range(config.sasrec_blocks)
        )
        self.norm = nn.LayerNorm(dim)

    def encode(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden state after each position of left-aligned sequences (B, L): (B, L, dim)."""
        positions = torch.arange(sequences.shape[1])
        x = self.item_embedding(sequences) * self.scale + self.position(positions)
        x = F.dropout(x, self.dropout, self.training)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every catalog item (not the padding row): (..., items)."""
        return hidden @ self.item_embedding.weight[: self.num_items].T

    # --- Recommender ---------------------------------------------------------------------
    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        sequences = self.sequences[users]  # (n, L)
        last = (self.lengths[users] - 1).clamp(min=0)  # (n,) a user with no items reads a pad
        hidden = self.encode(sequences)[torch.arange(len(users)), last]  # (n, dim)
        return self.logits(hidden)  # (n, items)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users).gather(1, items.unsqueeze(1)).squeeze(1)

    def user_losses(self, batch: Batch, settings: TrainingSettings) -> torch.Tensor:
        """Mean next-item cross-entropy at the batch's target positions, per user: (B,)."""
        if not isinstance(batch, SequenceBatch):
            raise TypeError(f"SASRec trains on SequenceBatch, got {type(batch).__name__}")
        sequences = self.sequences[batch.users]  # (B, L)
        valid = batch.ends > 0  # a target needs at least one item before it
        safe = batch.ends.clamp(min=1)  # (B, M)
        hidden = self.encode(sequences)  # (B, L, dim)
        before = (safe - 1).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        logits = self.logits(torch.gather(hidden, 1, before))  # (B, M, items)
        targets = torch.gather(sequences, 1, safe)  # (B, M)
        targets = torch.where(valid, targets, torch.zeros_like(targets))  # no pad as target
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        loss = loss.view(safe.shape) * valid.to(logits.dtype)
        return loss.sum(1) / valid.sum(1).clamp(min=1).to(logits.dtype)

    def fold_in_user(
        self,
        positives: npt.NDArray[np.int64],
        negatives: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        iterations: int,
    ) -> None:
        """Nothing to fit: user 0 is served from the items bound as its history."""
        del positives, negatives, settings, iterations

    def user_vectors(self) -> list[nn.Embedding]:
        return []

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.item_embedding]
