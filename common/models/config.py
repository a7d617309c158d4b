"""A recommender's architecture, as settings: parsed once, identical at every party.

Import-light (no torch): :mod:`common.config` and the CLIs read it without
loading a model; :mod:`common.models.base` builds models from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errors import ConfigError
from common.models.registry import check_kind


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
    # SASRec (common/models/sasrec.py): attention blocks, heads per block, dropout, and the
    # uniform negatives per user of its sampled softmax (0: full softmax over the catalog)
    sasrec_blocks: int = 2
    sasrec_heads: int = 1
    dropout: float = 0.2
    sasrec_negatives: int = 0
    # EASE over private co-occurrence (common/models/ease.py): the most popular items it
    # covers (by the private item counts) and its ridge, relative to the Gram's mean diagonal
    ease_items: int = 1000
    ease_ridge: float = 10.0
    ease_noise_ridge: float = 0.0  # + this x the noise's spectral norm (2 noise-std sqrt(N))
    ease_decay: float = 1.0  # weight of a user's k-th most recent item: decay^(k-1)

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
        if self.sasrec_blocks < 1 or self.sasrec_heads < 1:
            raise ConfigError(
                f"sasrec-blocks and sasrec-heads must be >= 1, got {self.sasrec_blocks} and "
                f"{self.sasrec_heads}."
            )
        if self.embedding_dim % self.sasrec_heads:
            raise ConfigError(
                f"embedding-dim {self.embedding_dim} must be a multiple of sasrec-heads "
                f"{self.sasrec_heads}: each head reads an equal slice."
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.ease_items < 1:
            raise ConfigError(f"ease-items must be >= 1, got {self.ease_items}.")
        if not self.ease_ridge > 0:
            raise ConfigError(f"ease-ridge must be > 0, got {self.ease_ridge}.")
        if not 0 < self.ease_decay <= 1:
            raise ConfigError(f"ease-decay must be in (0, 1], got {self.ease_decay}.")
        if self.ease_noise_ridge < 0:
            raise ConfigError(f"ease-noise-ridge must be >= 0, got {self.ease_noise_ridge}.")
        if self.sasrec_negatives < 0:
            raise ConfigError(
                f"sasrec-negatives must be >= 0 (0: full softmax), got {self.sasrec_negatives}."
            )
