"""The personalisation knob: local fine-tuning of the shared parameters with a proximal pull.

Ditto-style: starting from the global model, the merchant minimises its own
training loss plus ``lambda / 2 * ||theta - theta_global||^2`` over the shared
parameters (user parameters train alongside). ``lambda = inf`` keeps the
global shared parameters (full consistency: only the users are fitted);
``lambda = 0`` is unconstrained local fine-tuning (full personalisation).

Privacy: the fine-tuned parameters are a function of this merchant's raw
data and are **local-only**. They are never sent, published or written to the
ledger; they exist in the serving process's memory. The federation's
guarantee (what leaves the merchant is DP per user) is untouched, but
recommendations computed from a fine-tuned model are *not* covered by that
guarantee towards the merchant's other users: they are the merchant's own
in-house model of its own data, like any recommender it trains alone.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from client.serving.defaults import DEFAULT_LAMBDA, FINE_TUNE_EPOCHS
from client.training.loop import fit_local, train_local
from common.config import TrainConfig
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.models.base import Recommender

__all__ = ["DEFAULT_LAMBDA", "FINE_TUNE_EPOCHS", "check_lambda", "personalise"]


def check_lambda(value: float) -> float:
    if math.isnan(value) or value < 0:
        raise ConfigError(
            f"--personalisation must be a number >= 0 or 'inf' (global model), got {value}."
        )
    return value


def personalise(
    model: Recommender,
    data: UserItemData,
    config: TrainConfig,
    *,
    lam: float,
    epochs: int = FINE_TUNE_EPOCHS,
    rng: np.random.Generator,
) -> None:
    """Fine-tune ``model`` in place on ``data`` with proximal weight ``lam`` (inf: users only)."""
    check_lambda(lam)
    if math.isinf(lam) or epochs < 1:
        return
    tuned = replace(config, proximal_mu=lam, local_epochs=epochs)
    train_local(model, data, tuned, rng=rng)
    fit_local(model, data, tuned, epochs=max(1, config.user_epochs), rng=rng)
