"""Cold-start evaluation: users hidden from training, folded in from a few recent items.

A share of the users with enough history is hidden: their rows never reach
training. After training, each hidden user gets a vector folded in from their
``recent`` most recent training items (:func:`client.serving.foldin.fold_in`,
exactly what ``fedrec serve`` does for an unseen user) and is ranked against
their held-out last item. Both groups are ranked with every item they have
interacted with excluded (the standard leave-last-out protocol); the *strict*
figure excludes only the folded-in items for hidden users, as a server that
knows nothing else about them would. The ratio of the two NDCG@K is the
figure of merit.

``choose="random"`` folds in from a seeded random sample of the user's
history, ``"last"`` from their most recent items, ``"all"`` from their whole
history (the ceiling: what any fold-in could know). The synthetic generator
gives each user's events in decreasing order of preference, so under it the
most recent items are the user's weakest signals (and the held-out item the
weakest of all); both are reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from client.serving.foldin import fold_in
from client.training.loop import train_local
from common.config import RunConfig
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.evaluation import evaluate_model
from common.metrics.ranking import full_ranking_metrics
from common.models.base import Recommender, build_model
from common.seeding import numpy_rng, torch_generator


@dataclass(frozen=True)
class ColdStartResult:
    k: int
    recent: int
    trained_users: int
    folded_users: int
    choose: str
    trained_ndcg: float
    folded_ndcg: float
    folded_ndcg_strict: float  # only the folded-in items excluded
    popularity_ndcg: float  # hidden users ranked by training popularity (the no-fold-in fallback)
    trained_hr: float
    folded_hr: float
    mean_trained_history: float  # training items per trained user

    @property
    def ratio(self) -> float:
        return self.folded_ndcg / self.trained_ndcg if self.trained_ndcg > 0 else float("nan")


def hide_users(
    data: UserItemData, *, fraction: float, min_items: int, rng: np.random.Generator
) -> tuple[UserItemData, npt.NDArray[np.int64]]:
    """``data`` with a random ``fraction`` of eligible test users removed from training.

    Eligible users have a held-out item and at least ``min_items`` training
    items. Hidden users keep their index (an empty row), so nothing else moves.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"the hidden fraction must be in (0, 1), got {fraction}.")
    counts = np.diff(data.train_indptr)
    eligible = data.test_users[counts[data.test_users] >= min_items]
    hidden = np.sort(
        rng.choice(eligible, size=max(1, int(fraction * len(eligible))), replace=False)
    )
    keep_row = np.ones(data.num_train, dtype=bool)
    keep_row[np.isin(data.train_users, hidden)] = False
    kept_counts = counts.copy()
    kept_counts[hidden] = 0
    indptr = np.zeros(data.num_users + 1, dtype=np.int64)
    np.cumsum(kept_counts, out=indptr[1:])
    keep_test = ~np.isin(data.test_users, hidden)
    return (
        dataclasses.replace(
            data,
            train_indptr=indptr,
            train_items=data.train_items[keep_row],
            train_values=data.train_values[keep_row],
            test_users=data.test_users[keep_test],
            test_items=data.test_items[keep_test],
            test_values=data.test_values[keep_test],
            train_events=None if data.train_events is None else data.train_events[keep_row],
            test_events=None if data.test_events is None else data.test_events[keep_test],
        ),
        hidden.astype(np.int64),
    )


def evaluate_folded_scores(
    scores: npt.NDArray[np.floating], data: UserItemData, hidden: npt.NDArray[np.int64], *, k: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Per-user metrics of given scores (n_hidden, items), each user's history excluded."""
    test_of = dict(zip(data.test_users.tolist(), data.test_items.tolist(), strict=True))
    indptr, indices = data.train_csr(hidden)
    targets = np.asarray([test_of[u] for u in hidden.tolist()])
    return full_ranking_metrics(
        scores, targets, exclude_indptr=indptr, exclude_indices=indices, k=k
    )


def evaluate_folded(
    model: Recommender,
    data: UserItemData,
    hidden: npt.NDArray[np.int64],
    config: RunConfig,
    *,
    recent: int,
    choose: str = "random",
    strict: bool = False,
) -> dict[str, npt.NDArray[np.float64]]:
    """Per-user metrics of ``hidden`` users folded in from ``recent`` of their items."""
    one = build_model(
        config.model, num_users=1, num_items=data.num_items, generator=torch.Generator()
    )
    one.load_shared({n: p.detach() for n, p in model.shared_parameters().items()})
    test_of = dict(zip(data.test_users.tolist(), data.test_items.tolist(), strict=True))
    rows, targets, exclude = [], [], []
    for user in hidden.tolist():
        history = data.items_of(user)  # training items, in time order
        if choose == "all":
            items = history
        elif choose == "last":
            items = history[-recent:]
        else:
            items = numpy_rng(config.federation.seed, "cold-start", "recent", user).choice(
                history, size=recent, replace=False
            )
        fold_in(one, items, config.train)
        with torch.no_grad():
            rows.append(one.score_all(torch.zeros(1, dtype=torch.int64)).numpy()[0])
        targets.append(test_of[user])
        exclude.append(items if strict else history)
    indptr = np.zeros(len(exclude) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in exclude], out=indptr[1:])
    return full_ranking_metrics(
        np.stack(rows),
        np.asarray(targets),
        exclude_indptr=indptr,
        exclude_indices=np.concatenate(exclude),
        k=config.federation.top_k,
    )


def run_cold_start(
    data: UserItemData,
    config: RunConfig,
    *,
    hidden_fraction: float = 0.2,
    recent: int = 5,
    choose: str = "random",
    epochs: int | None = None,
) -> ColdStartResult:
    """Hide users, train on the rest (``epochs`` passes), fold the hidden ones in, compare."""
    seed = config.federation.seed
    train_data, hidden = hide_users(
        data,
        fraction=hidden_fraction,
        min_items=recent,
        rng=numpy_rng(seed, "cold-start", "hide"),
    )
    model = build_model(
        config.model,
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch_generator(seed, "cold-start", "init"),
    )
    passes = (
        epochs if epochs is not None else config.federation.num_rounds * config.train.local_epochs
    )
    train_local(
        model,
        train_data,
        dataclasses.replace(config.train, local_epochs=passes),
        rng=numpy_rng(seed, "cold-start", "train"),
    )
    k = config.federation.top_k
    trained = evaluate_model(model, train_data, k=k, rng=numpy_rng(seed, "cold-start", "eval"))
    if choose not in ("random", "last", "all"):
        raise ConfigError(f"choose must be 'random', 'last' or 'all', got {choose!r}.")
    folded = evaluate_folded(model, data, hidden, config, recent=recent, choose=choose)
    strict = evaluate_folded(model, data, hidden, config, recent=recent, choose=choose, strict=True)
    counts = np.diff(train_data.train_indptr)
    popularity = np.bincount(train_data.train_items, minlength=data.num_items).astype(np.float64)
    popular = evaluate_folded_scores(
        np.broadcast_to(popularity, (len(hidden), data.num_items)), data, hidden, k=k
    )
    return ColdStartResult(
        popularity_ndcg=float(np.nanmean(popular[f"ndcg@{k}"])),
        k=k,
        recent=recent,
        choose=choose,
        folded_ndcg_strict=float(np.nanmean(strict[f"ndcg@{k}"])),
        mean_trained_history=float(counts[counts > 0].mean()),
        trained_users=trained.num_users,
        folded_users=len(hidden),
        trained_ndcg=trained.means[f"ndcg@{k}"],
        folded_ndcg=float(np.nanmean(folded[f"ndcg@{k}"])),
        trained_hr=trained.means[f"hr@{k}"],
        folded_hr=float(np.nanmean(folded[f"hr@{k}"])),
    )
