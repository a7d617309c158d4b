"""The one list of recommender models: a kind name -> where its class lives.

A model is a :class:`common.models.base.Recommender` subclass in its own
module; adding one is that file, one entry here and its tests. Classes are
imported on first use, so this module imports nothing heavy and the model
modules (which import ``base``) never form an import loop with it. Config
validation and the CLIs' ``--model`` choices read :data:`MODELS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from common.errors import ConfigError

if TYPE_CHECKING:
    from common.models.base import ModelConfig, Recommender


class ModelFactory(Protocol):
    """How every registered model class is constructed."""

    def __call__(self, config: ModelConfig, *, num_users: int, num_items: int) -> Recommender: ...


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: ``path`` is ``"package.module:ClassName"``."""

    path: str
    summary: str


MODELS: dict[str, ModelEntry] = {
    "mf": ModelEntry("common.models.mf:MatrixFactorization", "matrix factorisation (user vectors)"),
    "neumf": ModelEntry("common.models.neumf:NeuMF", "NeuMF: GMF + MLP over user/item vectors"),
    "history": ModelEntry(
        "common.models.history:HistoryModel", "the user's own recent items, next-item softmax"
    ),
}


def model_kinds() -> tuple[str, ...]:
    return tuple(MODELS)


def check_kind(kind: str) -> None:
    if kind not in MODELS:
        raise ConfigError(f"Unknown model {kind!r}: expected one of {', '.join(MODELS)}.")


def model_class(kind: str) -> ModelFactory:
    """The class registered as ``kind``, imported now."""
    check_kind(kind)
    module, _, name = MODELS[kind].path.partition(":")
    cls: ModelFactory = getattr(importlib.import_module(module), name)
    return cls
