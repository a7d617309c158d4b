"""The recipe for real interaction logs: tuned settings placed beneath a user's own.

``fedrec simulate --data FILE`` (and experiment files and the real-data
benchmark) train with these when privacy is off and the user has not chosen
another model, and so does any non-private run that chooses ``model=history``
(on synthetic data too): a history model (:mod:`common.models.history`) trained on
next-item softmax, each merchant's Adam kept across rounds, FedAvgM's server
step and a cosine learning rate over the rounds. Explicit settings always win.

Chosen on validation splits of MovieLens 100K and Amazon Beauty (each user's
last training item as the target; the test items never read): see
``benchmarks/results/real_data.md`` for the measurements and the ablation.
DP-SGD has its own tuned layer (:data:`common.privacy.config.PRIVATE_DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

REAL_LOG_DEFAULTS: Final[Mapping[str, Any]] = {
    "model": "history",
    "embedding-dim": 128,
    "batch-users": 128,
    "positions-per-user": 8,
    "user-epochs": 0,
    "weight-decay": 0.0,
    "learning-rate": 0.003,
    "local-steps": 35,
    "num-server-rounds": 12,
    "keep-optimizer-state": True,
    "learning-rate-schedule": "cosine",
    "strategy": "fedavgm",
    "fedavgm-learning-rate": 3.0,
}


def with_real_log_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` over the recipe, unless they choose a model the recipe is not for."""
    model = settings.get("model", REAL_LOG_DEFAULTS["model"])
    if model != REAL_LOG_DEFAULTS["model"]:
        return dict(settings)
    return {**REAL_LOG_DEFAULTS, **settings}
