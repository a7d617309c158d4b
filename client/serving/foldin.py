"""Fold-in: a vector for a user the model has never seen, from a few of their items.

The shared (item) parameters stay frozen; only a fresh user's local
parameters are fitted, to the *expected* training loss for that user: with
``r`` negatives per positive drawn uniformly (as in training), a user's BCE
loss averages to ``1/(1+r)`` x mean over their items of ``softplus(-s_i)``
plus ``r/(1+r)`` x mean over the other items of ``softplus(s_j)``, plus the
same L2 weight decay. Without sampling noise the optimum is deterministic;
L-BFGS reaches it in a few dozen evaluations of a (d+1)-parameter problem.
For catalogs above :data:`MAX_NEGATIVES` items the mean over "other items"
is taken on a fixed sample seeded by the user's items, so the same request
always gets the same vector. Nothing is retrained or released.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

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
    pool = np.arange(num_items, dtype=np.int64) if item_pool is None else item_pool
    positives = np.intersect1d(np.unique(items), pool).astype(np.int64)
    others = np.setdiff1d(pool, positives, assume_unique=True)
    if len(others) > MAX_NEGATIVES:
        rng = np.random.default_rng(fold_in_seed(items))
        others = np.sort(rng.choice(others, size=MAX_NEGATIVES, replace=False))
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
    for param in model.shared_parameters().values():
        param.requires_grad_(False)
    for param in local.values():
        param.requires_grad_(True)
    user = torch.zeros(1, dtype=torch.int64)
    pos_items = torch.as_tensor(positives)
    neg_items = torch.as_tensor(negatives)
    ratio = config.num_negatives / (1.0 + config.num_negatives)
    optimizer = torch.optim.LBFGS(
        list(local.values()), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        pos = model.score(user.expand(len(pos_items)), pos_items)
        if config.loss == "bce":
            neg = model.score(user.expand(len(neg_items)), neg_items)
            loss = (1.0 - ratio) * F.softplus(-pos).mean() + ratio * F.softplus(neg).mean()
        else:  # explicit ratings: recent items count as liked (value 1, as fedrec's loader encodes)
            loss = (pos - 1.0).pow(2).mean()
        if config.weight_decay > 0:
            loss = loss + config.weight_decay * sum(
                table(user).pow(2).sum() for table in model.user_vectors()
            )
        loss.backward()
        return loss

    model.train()
    optimizer.step(closure)
    model.eval()
    for param in local.values():
        param.requires_grad_(False)
    return {name: param.detach().clone() for name, param in local.items()}
