"""Leave-last-out evaluation of any scorer on one party's data.

Full-ranking HR/NDCG/Recall@K and AUC over the whole catalog (the user's
training items excluded), plus the sampled 99-negatives protocol of He et al.
2017. Users are scored in chunks so memory stays ``chunk x catalog``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from common.data.dataset import UserItemData
from common.metrics.ranking import (
    RankingAccumulator,
    full_ranking_metrics,
    metrics_from_positions,
    sample_negatives,
    sampled_positions,
)
from common.models.base import Recommender
from common.models.prior import ItemPrior

Scorer = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.floating]]  # users -> (n, items)
SAMPLED_NEGATIVES = 99


@dataclass(frozen=True)
class EvaluationResult:
    """Mean metrics plus the per-user arrays behind them (for per-group breakdowns)."""

    means: dict[str, float]
    per_user: dict[str, npt.NDArray[np.float64]]
    users: npt.NDArray[np.int64]  # (n_eval,) the evaluated users, aligned with per_user

    @property
    def num_users(self) -> int:
        return len(self.users)


def evaluate_scores(
    scorer: Scorer,
    data: UserItemData,
    *,
    k: int,
    rng: np.random.Generator,
    chunk_users: int = 1024,
    sampled_negatives: int = SAMPLED_NEGATIVES,
) -> EvaluationResult:
    """Evaluate ``scorer`` on every user of ``data`` that has a held-out item."""
    accumulator = RankingAccumulator()
    eligible = data.num_items - 1 - np.diff(data.train_indptr)[data.test_users]
    use_sampled = sampled_negatives > 0 and bool(np.all(eligible >= sampled_negatives))
    for start in range(0, len(data.test_users), chunk_users):
        users = data.test_users[start : start + chunk_users]
        targets = data.test_items[start : start + chunk_users]
        scores = np.asarray(scorer(users), dtype=np.float64)  # (n, items)
        indptr, indices = data.train_csr(users)
        per_user = full_ranking_metrics(
            scores, targets, exclude_indptr=indptr, exclude_indices=indices, k=k
        )
        if use_sampled:
            negatives = sample_negatives(
                n_items=data.num_items,
                targets=targets,
                exclude_indptr=indptr,
                exclude_indices=indices,
                num_negatives=sampled_negatives,
                rng=rng,
            )  # (n, 99)
            rows = np.arange(len(users))
            greater, ties = sampled_positions(
                scores[rows, targets], np.take_along_axis(scores, negatives, axis=1)
            )
            per_user.update(metrics_from_positions(greater, ties, k=k, sampled=True))
        accumulator.add(per_user)
    return EvaluationResult(
        means=accumulator.means(), per_user=accumulator.per_user(), users=data.test_users.copy()
    )


def evaluate_model(
    model: Recommender,
    data: UserItemData,
    *,
    k: int,
    rng: np.random.Generator,
    prior: ItemPrior | None = None,
) -> EvaluationResult:
    """Evaluate a recommender (eval mode, no gradients) on ``data``, with its item prior."""
    model.eval()

    def scorer(users: npt.NDArray[np.int64]) -> npt.NDArray[np.floating]:
        with torch.no_grad():
            scores = model.score_all(torch.as_tensor(users, dtype=torch.int64))
            return (prior.apply(scores) if prior is not None else scores).numpy()

    return evaluate_scores(scorer, data, k=k, rng=rng)
