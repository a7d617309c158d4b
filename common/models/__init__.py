"""Recommender models behind one interface (see :mod:`common.models.base`).

The registry (:mod:`common.models.registry`) is import-light, so the CLIs read
the model names without importing torch; the names below load on first use.
A model subclasses :class:`~common.models.local_vector.LocalVectorRecommender`
(a user is their own vector) or :class:`~common.models.recent_items.RecentItemsRecommender`
(a user is their recent items), lives in its own module and has one line in
:data:`~common.models.registry.MODELS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from common.models.base import (
        LOCAL_VECTOR,
        RECENT_ITEMS,
        ModelConfig,
        Recommender,
        build_model,
    )

__all__ = ["LOCAL_VECTOR", "RECENT_ITEMS", "ModelConfig", "Recommender", "build_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from common.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
