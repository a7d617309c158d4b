"""Fold-in: a vector for a user the model has never seen, from a few of their items.

The shared (item) parameters stay frozen; only a fresh user's local
parameters are fitted, by the model itself
(:meth:`~common.models.base.Recommender.fold_in_user`), to the *expected*
training loss for that user: with ``r`` negatives per positive drawn
uniformly (as in training), a user's BCE loss averages to ``1/(1+r)`` x mean
over their items of ``softplus(-s_i)`` plus ``r/(1+r)`` x mean over the other
items of ``softplus(s_j)``, plus the same L2 weight decay. Without sampling
noise the optimum is deterministic. Matrix factorisation solves it by damped
Newton steps in numpy (a few milliseconds); other models use L-BFGS.
This module chooses the items: the user's positives and what they are
against. For catalogs above :data:`MAX_NEGATIVES` items the mean over "other items"
is taken on a fixed sample seeded by the user's items, so the same request
always gets the same vector. Nothing is retrained or released.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
import torch

from common.config import TrainConfig
from common.models.base import Recommender

MAX_NEGATIVES = 4096
LBFGS_ITERATIONS = 25


def fold_in_seed(items: npt.NDArray[np.int64]) -> int:
    """A seed from the items themselves: the same request always gets the same vector."""
    digest = hashlib.sha256(np.sort(items).astype(np.int64).tobytes()).digest()
    return int.from_bytes(digest[:8], "little")


def fold_in_candidates(
    items: npt.NDArray[np.int64],
    *,
    num_items: int,
    item_pool: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(positives, negatives)``: the user's items in the pool, and the items they are against."""
    pool_size = num_items if item_pool is None else len(item_pool)
    unique = np.unique(items).astype(np.int64)
    positives = unique if item_pool is None else np.intersect1d(unique, item_pool)
    if pool_size - len(positives) <= MAX_NEGATIVES:
        pool = np.arange(num_items, dtype=np.int64) if item_pool is None else item_pool
        others = np.setdiff1d(pool, positives)
    else:  # a fixed sample of the pool, seeded by the items (same request, same vector)
        rng = np.random.default_rng(fold_in_seed(items))
        drawn = rng.choice(pool_size, size=MAX_NEGATIVES + len(positives), replace=False)
        drawn = drawn if item_pool is None else item_pool[drawn]
        others = np.sort(drawn[~np.isin(drawn, positives)][:MAX_NEGATIVES])
    return positives, others.astype(np.int64)


def fold_in(
    model: Recommender,
    items: npt.NDArray[np.int64],
    config: TrainConfig,
    *,
    item_pool: npt.NDArray[np.int64] | None = None,
    iterations: int = LBFGS_ITERATIONS,
) -> dict[str, torch.Tensor]:
    """Fit user 0 of ``model`` (a one-user model sharing the global items) to ``items``.

    Returns the fitted local parameters (also left in ``model``). The user row
    starts at zero, so the result depends only on ``items`` and the shared
    parameters. With ``item_pool`` (the items a private federation trained),
    only pool items count as positives and negatives.
    """
    if model.num_users != 1:
        raise ValueError(f"fold-in needs a one-user model, got {model.num_users} users")
    positives, negatives = fold_in_candidates(items, num_items=model.num_items, item_pool=item_pool)
    local = model.local_parameters()
    with torch.no_grad():
        for param in local.values():
            param.zero_()
    if len(positives) == 0:
        return {name: param.detach().clone() for name, param in local.items()}
    model.fold_in_user(positives, negatives, config, iterations=iterations)
    return {name: param.detach().clone() for name, param in local.items()}
