"""Recommender models behind one interface (see :mod:`common.models.base`)."""

from common.models.base import ModelConfig, Recommender, build_model

__all__ = ["ModelConfig", "Recommender", "build_model"]
