"""The one list of recommender models: a kind name -> where its class lives.

A model is a :class:`common.models.base.Recommender` subclass in its own
module; adding one is that file, one entry here and its tests. Classes are
imported on first use, so this module imports nothing heavy and the model
modules (which import ``base``) never form an import loop with it. Config
validation and the CLIs' ``--model`` choices read :data:`MODELS`.

A model defined outside fedrec (a plug-in, a test) is added at run time with
:func:`register_model`. The entry is also written to the
:data:`MODELS_ENVIRONMENT` variable, which this module reads when it is
imported, so processes started afterwards (a simulation's Ray workers,
subprocesses) know the model as well; they import its class by its path.
"""

from __future__ import annotations

import importlib
import json
import os
import re
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
    statistics: bool = False  # learnt from one DP release of statistics, not DP-SGD steps


MODELS: dict[str, ModelEntry] = {
    "mf": ModelEntry("common.models.mf:MatrixFactorization", "matrix factorisation (user vectors)"),
    "neumf": ModelEntry("common.models.neumf:NeuMF", "NeuMF: GMF + MLP over user/item vectors"),
    "history": ModelEntry(
        "common.models.history:HistoryModel", "the user's own recent items, next-item softmax"
    ),
    "sasrec": ModelEntry(
        "common.models.sasrec:SASRec", "SASRec: causal self-attention over the recent items"
    ),
    "ease": ModelEntry(
        "common.models.ease:EASE",
        "EASE over the merchants' DP item co-occurrence (one release)",
        statistics=True,
    ),
}


BUILT_IN_MODELS = frozenset(MODELS)
# JSON {kind: {"path": "package.module:ClassName", "summary": ...}}: models registered at run time
MODELS_ENVIRONMENT = "FEDREC_MODELS"
_KIND = re.compile(r"[a-z][a-z0-9-]*")
_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def register_model(kind: str, target: str | type, *, summary: str) -> ModelEntry:
    """Add the model ``target`` to :data:`MODELS` as ``kind``, here and in processes started later.

    ``target`` is a ``Recommender`` subclass defined at module level, or its path
    ``"package.module:ClassName"``; it is imported now, so a wrong one fails here.
    Registering a kind again with the same path only updates its summary. A Ray
    cluster started before (``ray-address``) does not see the entry: export
    :data:`MODELS_ENVIRONMENT` where it starts, or add the model to :data:`MODELS`.
    """
    path = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    if not _KIND.fullmatch(kind):
        raise ConfigError(f"A model kind is lower-case letters, digits and '-', got {kind!r}.")
    if not _PATH.fullmatch(path):
        raise ConfigError(
            f"Model {kind!r}: {path!r} is not an importable 'package.module:ClassName' (other "
            "processes import the class by that path, so it must be defined at module level)."
        )
    known = MODELS.get(kind)
    if known is not None and known.path != path:
        raise ConfigError(f"Model {kind!r} is already registered as {known.path}.")
    entry = ModelEntry(path, summary)
    _check_class(kind, entry)
    MODELS[kind] = entry
    _export()
    return entry


def unregister_model(kind: str) -> None:
    """Remove a model added by :func:`register_model` (here and for processes started later)."""
    if kind in BUILT_IN_MODELS:
        raise ConfigError(f"Model {kind!r} is built in; only registered models can be removed.")
    MODELS.pop(kind, None)
    _export()


def _check_class(kind: str, entry: ModelEntry) -> None:
    module, _, name = entry.path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Model {kind!r}: cannot import {entry.path} ({exc}).") from exc
    # looked up at run time, as the model classes are: ``base`` imports this module
    recommender = importlib.import_module("common.models.base").Recommender
    if not (isinstance(cls, type) and issubclass(cls, recommender)):
        raise ConfigError(f"Model {kind!r}: {entry.path} is not a Recommender subclass.")


def _export() -> None:
    added = {k: {"path": e.path, "summary": e.summary} for k, e in MODELS.items()}
    added = {k: v for k, v in added.items() if k not in BUILT_IN_MODELS}
    if added:
        os.environ[MODELS_ENVIRONMENT] = json.dumps(added, sort_keys=True)
    else:
        os.environ.pop(MODELS_ENVIRONMENT, None)


def _imported() -> dict[str, ModelEntry]:
    """The models registered by the process that started this one."""
    text = os.environ.get(MODELS_ENVIRONMENT, "")
    if not text:
        return {}
    try:
        added = json.loads(text)
        return {
            k: ModelEntry(str(v["path"]), str(v["summary"]))
            for k, v in added.items()
            if k not in BUILT_IN_MODELS
        }
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"{MODELS_ENVIRONMENT} must be JSON {{kind: {{path, summary}}}}, got {text!r}."
        ) from exc


MODELS.update(_imported())


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
