"""Neural matrix factorisation (He et al. 2017): GMF and MLP towers fused by a linear layer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from common.models.base import ModelConfig
from common.models.local_vector import LocalVectorRecommender


class NeuMF(LocalVectorRecommender):
    """``score = w . [p_u * q_i ; MLP([p'_u ; q'_i])] + b_i``.

    Local: the two user tables (``gmf_user``, ``mlp_user``). Shared: the two item
    tables, the item bias, the MLP tower and the output layer.
    """

    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ("gmf_user.weight", "mlp_user.weight")

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items)
        dim = config.embedding_dim
        self.gmf_user = nn.Embedding(num_users, dim)  # (users, dim)
        self.gmf_item = nn.Embedding(num_items, dim)  # (items, dim)
        self.mlp_user = nn.Embedding(num_users, dim)  # (users, dim)
        self.mlp_item = nn.Embedding(num_items, dim)  # (items, dim)
        self.item_bias = nn.Embedding(num_items, 1)  # (items, 1)
        layers: list[nn.Module] = []
        width = 2 * dim
        for out in config.mlp_layers:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.mlp = nn.Sequential(*layers)
        self.output = nn.Linear(dim + width, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.gmf_user(users) * self.gmf_item(items)  # (n, dim)
        tower = self.mlp(torch.cat([self.mlp_user(users), self.mlp_item(items)], dim=-1))
        fused = torch.cat([gmf, tower], dim=-1)  # (n, dim + last_width)
        return self.output(fused).squeeze(-1) + self.item_bias(items).squeeze(-1)  # (n,)

    def user_vectors(self) -> list[nn.Embedding]:
        return [self.gmf_user, self.mlp_user]

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.gmf_item, self.mlp_item]
