"""SASRec: a user is their recent items, read by causal self-attention.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018), with
pre-LayerNorm blocks and a full softmax over the catalog:

* the input is the user's time-ordered training items (at most ``history-max``,
  the most recent), embedded by ``item_embedding`` (scaled by sqrt(dim)) plus a
  learned position (``position``) plus the event type of each (``event``:
  view, cart, purchase, ... or "not known", the only one a log without an
  ``event_type`` column, or a serving request, uses);
* ``sasrec-blocks`` blocks, each causal multi-head self-attention
  (``sasrec-heads`` heads) and a position-wise feed-forward layer, both
  residual, with ``dropout``;
* the hidden state after item ``t`` scores items by a dot product with the
  same ``item_embedding`` rows (tied input and output), trained by next-item
  cross-entropy at every position of the user's history (all its prefixes,
  :func:`~common.models.batches.build_prefix_batch`), averaged per user:
  over the whole catalog (``sasrec-negatives = 0``), or a sampled softmax of
  each target against ``sasrec-negatives`` uniform items drawn for that user
  (shared by its positions; a negative equal to the target is masked), whose
  cost does not grow with the catalog.

Every parameter is shared: a user's representation is their own sequence,
which stays with the party that holds it
(:class:`~common.models.recent_items.RecentItemsRecommender`), so a new user
is served from their recent items with nothing to fit.

Private training clips each user's whole-sequence gradient exactly
(:mod:`client.training.clipping`): every parameter is owned by an
``nn.Embedding``, ``nn.Linear`` or ``nn.LayerNorm`` called with the batch's
users as leading dimension, attention and activations are functional, and
the tied output reads ``item_embedding`` through its forward (the sampled
softmax), so one user's input and output uses of a row are summed before
squaring. The full softmax reads the table directly, so a private run needs
``sasrec-negatives > 0`` (:meth:`clipping_problem`).
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
from common.models.batches import Batch, SequenceBatch, build_prefix_batch, draw_negatives
from common.models.recent_items import RecentItemsRecommender

if TYPE_CHECKING:
    from common.data.dataset import UserItemData
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

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items, max_history=config.history_max)
        dim = config.embedding_dim
        if dim % config.sasrec_heads:
            raise ValueError(
                f"embedding-dim {dim} must be a multiple of sasrec-heads {config.sasrec_heads}."
            )
        self.scale = math.sqrt(dim)
        self.dropout = config.dropout
        self.negatives = config.sasrec_negatives
        # (items + pad, dim), tied output
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=self.pad)
        self.position = nn.Embedding(config.history_max, dim)  # (L, dim)
        self.event = nn.Embedding(self.no_event + 1, dim)  # (event types + not known, dim)
        self.blocks = nn.ModuleList(
            _Block(dim, config.sasrec_heads, config.dropout) for _ in range(config.sasrec_blocks)
        )
        self.norm = nn.LayerNorm(dim)

    def encode(self, sequences: torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state after each position of left-aligned sequences (B, L), with their event
        types (B, L) (default: not known): (B, L, dim)."""
        positions = torch.arange(sequences.shape[1]).expand_as(sequences)  # (B, L): rows per user
        if events is None:
            events = torch.full_like(sequences, self.no_event)
        x = self.item_embedding(sequences) * self.scale + self.position(positions)
        x = x + self.event(events)
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
        hidden = self.encode(sequences, self.event_sequences[users])  # (n, L, dim)
        hidden = hidden[torch.arange(len(users)), last]  # (n, dim)
        return self.logits(hidden)  # (n, items)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_all(users).gather(1, items.unsqueeze(1)).squeeze(1)

    def make_batch(
        self,
        data: UserItemData,
        users: npt.NDArray[np.int64],
        settings: TrainingSettings,
        *,
        rng: np.random.Generator,
        item_pool: npt.NDArray[np.int64] | None = None,
    ) -> SequenceBatch:
        """Every position of each user's bound history, plus ``sasrec-negatives`` uniform
        items per user (from ``item_pool`` if given) for the sampled softmax."""
        batch = build_prefix_batch(self.lengths.numpy(), users)
        if not self.negatives:
            return batch
        negatives = draw_negatives(
            len(users), self.negatives, num_items=self.num_items, rng=rng, item_pool=item_pool
        )
        return SequenceBatch(users=batch.users, ends=batch.ends, negatives=negatives)

    def user_losses(self, batch: Batch, settings: TrainingSettings) -> torch.Tensor:
        """Mean next-item cross-entropy at the batch's target positions, per user: (B,)."""
        if not isinstance(batch, SequenceBatch):
            raise TypeError(f"SASRec trains on SequenceBatch, got {type(batch).__name__}")
        # Causal attention: positions after the batch's last target change nothing it reads,
        # so only the first (last target + 1) columns are encoded (the rest is padding).
        width = max(2, int(batch.ends.max()) + 1)
        sequences = self.sequences[batch.users, :width]  # (B, W + 1)
        valid = batch.ends > 0  # a target needs at least one item before it
        safe = batch.ends.clamp(min=1)  # (B, M)
        hidden = self.encode(sequences, self.event_sequences[batch.users, :width])  # (B, W+1, dim)
        before = (safe - 1).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        states = torch.gather(hidden, 1, before)  # (B, M, dim)
        targets = torch.gather(sequences, 1, safe)  # (B, M)
        targets = torch.where(valid, targets, torch.zeros_like(targets))  # no pad as target
        if batch.negatives is None:
            logits = self.logits(states)  # (B, M, items)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        else:
            loss = self.sampled_loss(states, targets, batch.negatives)
        loss = loss.view(safe.shape) * valid.to(hidden.dtype)
        return loss.sum(1) / valid.sum(1).clamp(min=1).to(hidden.dtype)

    def sampled_loss(
        self, states: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """Cross-entropy of each target against the user's negatives: (B * M,).

        ``states`` (B, M, dim), ``targets`` (B, M), ``negatives`` (B, K); both item
        sets are read through ``item_embedding``'s forward, one row per user.
        """
        positive = (states * self.item_embedding(targets)).sum(-1, keepdim=True)  # (B, M, 1)
        negative = states @ self.item_embedding(negatives).transpose(1, 2)  # (B, M, K)
        hit = negatives.unsqueeze(1) == targets.unsqueeze(-1)  # (B, M, K) the target itself
        negative = negative.masked_fill(hit, float("-inf"))
        logits = torch.cat([positive, negative], dim=-1).flatten(0, 1)  # (B * M, 1 + K)
        return F.cross_entropy(
            logits, torch.zeros(len(logits), dtype=torch.int64), reduction="none"
        )

    def clipping_problem(self) -> str | None:
        if self.negatives:
            return None
        return (
            "model=sasrec with sasrec-negatives=0 scores the whole catalog by reading "
            "item_embedding's table directly, which per-user clipping cannot attribute to users. "
            "Set sasrec-negatives (e.g. --set sasrec-negatives=256) for a private run: its "
            "sampled softmax reads the table through the embedding, one row per user."
        )

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
