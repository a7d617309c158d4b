"""The recommender interface and the shared/local parameter split.

*Shared* parameters (item embeddings, item biases, MLP weights) are what the
federation trains together. *Local* parameters (user embeddings and biases)
stay with the party that owns the users: they are never sent and never logged.
A model knows nothing else about federation or privacy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from common.errors import ConfigError
from common.models.registry import check_kind, model_class

if TYPE_CHECKING:
    from common.data.dataset import UserItemData


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the recommender; identical at every party of a federation."""

    kind: str = "mf"
    embedding_dim: int = 32
    mlp_layers: tuple[int, ...] = field(default=(64, 32, 16))
    init_std: float = 0.1
    # history model (common/models/history.py): recent items, their decay, items kept per user
    history_window: int = 10
    history_decay: float = 0.7
    history_max: int = 200

    def __post_init__(self) -> None:
        check_kind(self.kind)
        if self.embedding_dim < 1:
            raise ConfigError(f"embedding-dim must be >= 1, got {self.embedding_dim}.")
        if any(width < 1 for width in self.mlp_layers):
            raise ConfigError(f"mlp-layers must be positive widths, got {self.mlp_layers}.")
        if self.init_std <= 0:
            raise ConfigError(f"init-std must be > 0, got {self.init_std}.")
        if self.history_window < 1 or self.history_max < 1:
            raise ConfigError(
                f"history-window and history-max must be >= 1, got {self.history_window} and "
                f"{self.history_max}."
            )
        if not 0 < self.history_decay <= 1:
            raise ConfigError(f"history-decay must be in (0, 1], got {self.history_decay}.")


class Recommender(nn.Module, ABC):
    """Scores (user, item) pairs; splits its parameters into shared and local.

    Subclasses list their user-owned parameters in ``LOCAL_PARAMETERS`` (names
    as in ``named_parameters()``); every other parameter is shared.
    """

    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]]

    def __init__(self, *, num_users: int, num_items: int) -> None:
        super().__init__()
        self.num_users = num_users
        self.num_items = num_items

    @abstractmethod
    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for pairs: ``users`` and ``items`` are (n,) int64; returns (n,)."""

    def score_all(self, users: torch.Tensor, *, chunk_items: int = 4096) -> torch.Tensor:
        """Logits of every catalog item for each user: (len(users), num_items).

        The default loops over item chunks with :meth:`score`; models with a
        cheaper closed form (MF: a matmul) override it.
        """
        rows = []
        for start in range(0, self.num_items, chunk_items):
            items = torch.arange(start, min(start + chunk_items, self.num_items))
            pair_users = users.repeat_interleave(len(items))  # (n * chunk,)
            pair_items = items.repeat(len(users))  # (n * chunk,)
            rows.append(self.score(pair_users, pair_items).view(len(users), len(items)))
        return torch.cat(rows, dim=1)

    def bind(self, data: UserItemData) -> None:
        """Give the model this party's data, if it scores from it (history models); else no-op.

        Called wherever a model is built for one party's users, before training or scoring.
        """

    def initialised(self) -> None:
        """Adjust the generic initialisation of :func:`build_model` (no-op by default)."""

    @abstractmethod
    def user_vectors(self) -> list[nn.Embedding]:
        """Embedding tables indexed by user (the rows that regularisation touches)."""

    @abstractmethod
    def item_vectors(self) -> list[nn.Embedding]:
        """Embedding tables indexed by item."""

    def shared_parameters(self) -> dict[str, torch.Tensor]:
        """Name → tensor for every parameter the federation trains together."""
        return {
            name: param
            for name, param in self.named_parameters()
            if name not in self.LOCAL_PARAMETERS
        }

    def local_parameters(self) -> dict[str, torch.Tensor]:
        """Name → tensor for the user-owned parameters that never leave their owner."""
        return {
            name: param for name, param in self.named_parameters() if name in self.LOCAL_PARAMETERS
        }

    def load_shared(self, arrays: dict[str, torch.Tensor]) -> None:
        """Overwrite shared parameters in place; names and shapes must match exactly."""
        shared = self.shared_parameters()
        if set(arrays) != set(shared):
            missing = sorted(set(shared) - set(arrays))
            extra = sorted(set(arrays) - set(shared))
            raise ValueError(f"shared parameters mismatch: missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for name, tensor in arrays.items():
                if tensor.shape != shared[name].shape:
                    raise ValueError(
                        f"shared parameter {name!r}: shape {tuple(tensor.shape)} "
                        f"does not match the model's {tuple(shared[name].shape)}"
                    )
                shared[name].copy_(tensor)

    def load_local(self, arrays: dict[str, torch.Tensor]) -> None:
        """Overwrite local (user) parameters in place."""
        local = self.local_parameters()
        with torch.no_grad():
            for name, tensor in arrays.items():
                local[name].copy_(tensor)


def build_model(
    config: ModelConfig, *, num_users: int, num_items: int, generator: torch.Generator
) -> Recommender:
    """Construct the registered ``config.kind`` (:mod:`common.models.registry`) and
    initialise it from an explicit random generator."""
    model = model_class(config.kind)(config, num_users=num_users, num_items=num_items)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                if module.embedding_dim == 1:  # bias tables start at zero
                    module.weight.zero_()
                else:
                    module.weight.normal_(0.0, config.init_std, generator=generator)
            elif isinstance(module, nn.Linear):  # Xavier-uniform from the same generator
                bound = (6.0 / sum(module.weight.shape)) ** 0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.zero_()
    model.initialised()
    return model
