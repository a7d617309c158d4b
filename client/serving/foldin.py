"""Fold-in: a vector for a user the model has never seen, from a few of their items.

The shared (item) parameters stay frozen; only a fresh user's local
parameters are fitted, to the *expected* training loss for that user: with
``r`` negatives per positive drawn uniformly (as in training), a user's BCE
loss averages to ``1/(1+r)`` x mean over their items of ``softplus(-s_i)``
plus ``r/(1+r)`` x mean over the other items of ``softplus(s_j)``, plus the
same L2 weight decay. Without sampling noise the optimum is deterministic.
For matrix factorisation the problem is an L2-regularised logistic
regression in d+1 parameters, solved by damped Newton steps in numpy (a few
milliseconds); other models use L-BFGS through torch.
For catalogs above :data:`MAX_NEGATIVES` items the mean over "other items"
is taken on a fixed sample seeded by the user's items, so the same request
always gets the same vector. Nothing is retrained or released.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from common.config import TrainConfig
from common.models.base import Recommender

if TYPE_CHECKING:
    from common.models.mf import MatrixFactorization

MAX_NEGATIVES = 4096
LBFGS_ITERATIONS = 25
NEWTON_ITERATIONS = 30
NEWTON_TOLERANCE = 1e-7


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
    from common.models.mf import MatrixFactorization

    if isinstance(model, MatrixFactorization) and config.loss == "bce":
        p, bias = _newton_mf(model, positives, negatives, config)
        with torch.no_grad():
            model.user_embedding.weight[0] = torch.from_numpy(p)
            model.user_bias.weight[0, 0] = bias
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


def _newton_mf(
    model: MatrixFactorization,
    positives: npt.NDArray[np.int64],
    negatives: npt.NDArray[np.int64],
    config: TrainConfig,
) -> tuple[npt.NDArray[np.float32], float]:
    """The MF fold-in optimum: damped Newton on ``theta = (p, b_u)``, float64."""
    weight = model.item_embedding.weight.detach().numpy()
    item_bias = model.item_bias.weight.detach().numpy()[:, 0]
    offset = float(model.global_bias.bias.detach()[0])
    items = np.concatenate([positives, negatives])
    x = np.hstack([weight[items].astype(np.float64), np.ones((len(items), 1))])  # (n, d+1)
    base = item_bias[items].astype(np.float64) + offset  # (n,)
    ratio = config.num_negatives / (1.0 + config.num_negatives)
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    w = np.concatenate(
        [
            np.full(len(positives), (1.0 - ratio) / len(positives)),
            np.full(len(negatives), ratio / max(len(negatives), 1)),
        ]
    )
    decay = np.full(x.shape[1], 2.0 * config.weight_decay)
    decay[-1] = 0.0  # the user bias is not decayed (as in training)

    def loss(theta: npt.NDArray[np.float64]) -> float:
        s = x @ theta + base
        return float(w @ (np.logaddexp(0.0, s) - y * s) + 0.5 * decay @ (theta * theta))

    theta = np.zeros(x.shape[1])
    current = loss(theta)
    for _ in range(NEWTON_ITERATIONS):
        s = x @ theta + base
        prob = 1.0 / (1.0 + np.exp(-s))
        grad = x.T @ (w * (prob - y)) + decay * theta
        hess = (x * (w * prob * (1.0 - prob))[:, None]).T @ x + np.diag(decay + 1e-9)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-4:  # backtracking: never increase the loss
            candidate = theta - scale * step
            value = loss(candidate)
            if value <= current:
                break
            scale *= 0.5
        else:
            break
        theta, previous, current = candidate, current, value
        if previous - current < NEWTON_TOLERANCE * max(1.0, abs(current)):
            break
    return theta[:-1].astype(np.float32), float(theta[-1])
