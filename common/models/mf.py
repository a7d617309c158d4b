"""Matrix factorisation: ``score(u, i) = p_u . q_i + b_u + b_i + g``."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from common.models.base import ModelConfig, Recommender
from common.models.layers import Offset


class MatrixFactorization(Recommender):
    """Dot product of user and item vectors plus user, item and global biases.

    Local: ``user_embedding``, ``user_bias``. Shared: ``item_embedding``,
    ``item_bias``, ``global_bias.bias``.
    """

    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ("user_embedding.weight", "user_bias.weight")

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items)
        dim = config.embedding_dim
        self.user_embedding = nn.Embedding(num_users, dim)  # (users, dim)
        self.user_bias = nn.Embedding(num_users, 1)  # (users, 1)
        self.item_embedding = nn.Embedding(num_items, dim)  # (items, dim)
        self.item_bias = nn.Embedding(num_items, 1)  # (items, 1)
        self.global_bias = Offset()  # one scalar, (1,)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        p = self.user_embedding(users)  # (n, dim)
        q = self.item_embedding(items)  # (n, dim)
        bias = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return self.global_bias((p * q).sum(-1) + bias)  # (n,)

    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        p = self.user_embedding(users)  # (n, dim)
        scores = p @ self.item_embedding.weight.T  # (n, items)
        scores += self.user_bias(users) + self.item_bias.weight.T
        return self.global_bias(scores)  # (n, items)

    def user_vectors(self) -> list[nn.Embedding]:
        return [self.user_embedding]

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.item_embedding]
