"""The rows of ``real_data.py``: each method run and scored on one dataset, and their summary.

Every row carries per-user HR@10 and NDCG@10 aligned with the pooled test users
(``Row``), so ``summarise`` can put a paired ratio to EASE^R beside each mean.
``synthetic_realism.py`` reuses these rows, so both benchmarks score alike.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.config import RunConfig
from common.constants import hr_at, ndcg_at
from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData
from common.data.partition import PartitionConfig
from common.data.schema import Interactions
from common.evaluation import EvaluationResult, evaluate_scores
from common.seeding import numpy_rng
from simulations.runner import DataSource

K = 10
SEED = 0
HR, NDCG = hr_at(K), ndcg_at(K)
BASELINE = "EASE^R"
IALS_ITERATIONS = 15


@dataclass
class Row:
    """One method on one dataset: per-user metrics aligned with the pooled test users."""

    method: str
    hr: npt.NDArray[np.float64] | None  # (test users,)
    ndcg: npt.NDArray[np.float64] | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    validation: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @classmethod
    def of(cls, method: str, result: EvaluationResult, seconds: float, **extra: Any) -> Row:
        return cls(method, result.per_user[HR], result.per_user[NDCG], seconds, **extra)


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


# --- data ------------------------------------------------------------------------------------


def training_events(pooled: UserItemData, catalog: ItemCatalog) -> Interactions:
    """The training pairs as an event log (timestamp = position in the user's history).

    Split leave-last-out again, this gives the validation split: each user's last
    training item is the target, and no test item is ever read.
    """
    counts = np.diff(pooled.train_indptr)
    users = np.repeat(np.asarray(pooled.user_keys, dtype=object), counts)
    starts = np.repeat(pooled.train_indptr[:-1], counts)
    keys = np.asarray(catalog.keys, dtype=object)
    return Interactions(
        user_id=users,
        item_id=keys[pooled.train_items],
        timestamp=(np.arange(pooled.num_train) - starts).astype(np.int64),
        value=pooled.train_values.astype(np.float32),
    )


# --- methods ---------------------------------------------------------------------------------


def popularity_row(pooled: UserItemData) -> Row:
    from simulations.baselines import evaluate_popularity

    result, seconds = _timed(lambda: evaluate_popularity(pooled, k=K, seed=SEED))
    return Row.of("popularity", result, seconds)


def _evaluate_ease(data: UserItemData, lam: float, *, stream: str) -> EvaluationResult:
    from simulations.reference import ease_weights, score_ease

    return score_ease(data, ease_weights(data, lam), k=K, rng=numpy_rng(SEED, "evaluate", stream))


def ease_row(pooled: UserItemData, grid: tuple[float, ...]) -> Row:
    """λ of ``grid`` with the best validation NDCG@10 (ties: first), refitted on all training data.

    The same split, weights, scoring, tie rule and random streams as
    ``reference.choose_ease_lambda`` + ``evaluate_ease`` (what ``fedrec simulate``
    prints), with the grid and per-λ progress of this benchmark.
    """
    from simulations.reference import validation_split

    started = time.perf_counter()
    split = validation_split(pooled)
    table = {}
    for lam in grid:
        table[lam] = _evaluate_ease(split, lam, stream="ease-validation").means[NDCG]
        print(f"  EASE^R validation λ={lam:g}: {table[lam]:.4f}", flush=True)
    best = max(grid, key=lambda lam: -math.inf if math.isnan(table[lam]) else table[lam])
    result = _evaluate_ease(pooled, best, stream="ease")
    return Row.of(
        BASELINE,
        result,
        time.perf_counter() - started,
        params={"lambda": best},
        validation=[{"lambda": lam, NDCG: value} for lam, value in table.items()],
    )


def _binary_csr(data: UserItemData) -> Any:
    from scipy.sparse import csr_matrix

    x = csr_matrix(
        (np.ones(data.num_train, dtype=np.float32), data.train_items, data.train_indptr),
        shape=(data.num_users, data.num_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _fit_ials(data: UserItemData, params: dict[str, Any]) -> EvaluationResult:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS threads would fight them
        model = AlternatingLeastSquares(
            factors=params["factors"],
            regularization=params["regularization"],
            alpha=params["alpha"],
            iterations=IALS_ITERATIONS,
            num_threads=2,
            random_state=SEED,
        )
        model.fit(_binary_csr(data), show_progress=False)
    users_f = np.asarray(model.user_factors)  # (users, factors)
    items_f = np.asarray(model.item_factors)  # (items, factors)
    return evaluate_scores(
        lambda users: users_f[users] @ items_f.T,
        data,
        k=K,
        rng=numpy_rng(SEED, "evaluate", "ials"),
    )


def ials_row(pooled: UserItemData, grid: dict[str, tuple[float, ...]]) -> Row:
    try:
        import implicit
    except ImportError:
        reason = (
            "the 'implicit' package is not installed: pip install -e '.[bench]' "
            "(or pip install implicit==0.7.2)"
        )
        print(f"  iALS skipped: {reason}", flush=True)
        return Row("iALS (implicit)", None, None, 0.0, note=f"skipped: {reason}")
    from simulations.reference import validation_split

    started = time.perf_counter()
    split = validation_split(pooled)
    validation = []
    for factors in grid["factors"]:
        for reg in grid["regularization"]:
            for alpha in grid["alpha"]:
                params = {"factors": int(factors), "regularization": reg, "alpha": alpha}
                result, seconds = _timed(functools.partial(_fit_ials, split, params))
                validation.append({**params, NDCG: result.means[NDCG], "seconds": seconds})
                print(f"  iALS validation {params}: {result.means[NDCG]:.4f}", flush=True)
    best = max(validation, key=lambda v: v[NDCG])
    chosen = {name: best[name] for name in ("factors", "regularization", "alpha")}
    result = _fit_ials(pooled, chosen)
    return Row.of(
        "iALS (implicit)",
        result,
        time.perf_counter() - started,
        params={**chosen, "iterations": IALS_ITERATIONS, "implicit": implicit.__version__},
        validation=validation,
    )


def centralised_row(pooled: UserItemData, run: RunConfig, *, recipe: str = "") -> Row:
    from simulations.baselines import train_centralised

    # as many steps as the 5-merchant IID federation takes together (with local-steps)
    result, seconds = _timed(lambda: train_centralised(pooled, run, parties=5))
    return Row.of(
        named("fedrec centralised", recipe), result, seconds, params=run_settings_summary(run)
    )


def named(method: str, recipe: str) -> str:
    """``method``, or ``method [recipe]`` for rows run with ``--set`` settings."""
    return f"{method} [{recipe}]" if recipe else method


def _loss_name(run: RunConfig) -> str:
    if run.model.kind == "history":
        return "next-item softmax"
    if run.model.kind == "sasrec":
        negatives = run.model.sasrec_negatives
        return f"sampled softmax ({negatives} negatives)" if negatives else "next-item softmax"
    return run.train.loss


def run_settings_summary(run: RunConfig) -> dict[str, Any]:
    if run.model.kind == "ease":  # one release of statistics: no training settings
        return {
            "model": run.model.kind,
            "rounds": run.federation.num_rounds,
            "ease_items": run.model.ease_items,
            "ease_ridge": run.model.ease_ridge,
            "item_threshold": run.privacy.item_threshold,
            "count_epsilon_share": run.privacy.count_share,
            "count_only_below": run.privacy.count_only_below,
            "train_min_items": run.privacy.train_min_items,
        }
    settings = {
        "model": run.model.kind,
        "embedding_dim": run.model.embedding_dim,
        "rounds": run.federation.num_rounds,
        **(
            {"local_steps": run.privacy.local_steps}
            if run.privacy.local_steps
            else {"local_epochs": run.train.local_epochs}
        ),
        "batch_users": run.train.batch_users,
        "loss": _loss_name(run),
        "learning_rate": run.train.learning_rate,
        "learning_rate_schedule": run.train.learning_rate_schedule,
        "keep_optimizer_state": run.train.keep_optimizer_state,
        "weight_decay": run.train.weight_decay,
        "strategy": run.federation.strategy,
    }
    if run.federation.strategy == "fedavgm":
        settings |= {
            "fedavgm_learning_rate": run.federation.fedavgm_learning_rate,
            "fedavgm_momentum": run.federation.fedavgm_momentum,
        }
    if run.model.kind == "sasrec":
        settings |= {
            "blocks": run.model.sasrec_blocks,
            "heads": run.model.sasrec_heads,
            "dropout": run.model.dropout,
            "max_sequence": run.model.history_max,
        }
    if run.model.kind == "history":
        settings |= {
            "positions_per_user": run.train.positions_per_user,
            "history_window": run.model.history_window,
            "history_decay": run.model.history_decay,
        }
    return settings


def federated_row(
    label: str,
    partition: PartitionConfig,
    source: DataSource,
    events: Interactions,
    pooled: UserItemData,
    run: RunConfig,
    scratch: Path,
) -> Row:
    """``run`` through the Simulation Engine on ``events`` (loaded from ``source``)."""
    from simulations.runner import SimulationSpec, simulate

    spec = SimulationSpec(
        run=run,
        source=source,
        partition=partition,
        run_dir=scratch
        / "-".join(
            (Path(source.name()).stem, partition.scheme, str(partition.num_parties), label[-12:])
        ).replace(" ", "_"),
        overwrite=True,
        baselines=False,
    )
    results, seconds = _timed(lambda: simulate(spec, events=events))
    hr, ndcg, means = federated_per_user(spec.run_dir, pooled)
    reported = results["federated"]["overall"]
    note = (
        f"per-user metrics recomputed from the run directory; mean NDCG@10 {means[NDCG]:.5f} "
        f"vs {reported[NDCG]:.5f} in metrics.json"
    )
    params = run_settings_summary(run) | {"partition": dataclasses.asdict(partition)}
    return Row(label, hr, ndcg, seconds, params=params, note=note)


def federated_per_user(
    run_dir: Path, pooled: UserItemData
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], dict[str, float]]:
    """Each merchant's users scored by the global model and its saved user vectors (the
    model alone, whatever the merchant chose to serve: :mod:`simulations.served`)."""
    from simulations.served import served_by_merchant

    position = {key: i for i, key in enumerate(np.asarray(pooled.user_keys)[pooled.test_users])}
    hr = np.full(len(pooled.test_users), np.nan)
    ndcg = np.full(len(pooled.test_users), np.nan)
    for one in served_by_merchant(run_dir, k=K, seed=SEED, follow_choice=False):
        rows = [position[one.user_keys[u]] for u in one.result.users]
        hr[rows] = one.result.per_user[HR]
        ndcg[rows] = one.result.per_user[NDCG]
    missing = int(np.isnan(ndcg).sum())
    if missing:
        raise RuntimeError(f"{missing} test users were not evaluated by any merchant")
    return hr, ndcg, {HR: float(hr.mean()), NDCG: float(ndcg.mean())}


# --- statistics ------------------------------------------------------------------------------


def _mean_se(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def ratio_se(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[float, float]:
    """mean(a) / mean(b) and its paired delta-method standard error over the same users."""
    ratio = float(a.mean() / b.mean())
    se = float((a - ratio * b).std(ddof=1) / (math.sqrt(len(a)) * b.mean()))
    return ratio, se


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    base = next((r for r in rows if r.method == BASELINE and r.ndcg is not None), None)
    out = []
    for row in rows:
        entry: dict[str, Any] = {"method": row.method, "seconds": row.seconds}
        if row.hr is not None and row.ndcg is not None:
            entry[HR], entry[f"{HR}_se"] = _mean_se(row.hr)
            entry[NDCG], entry[f"{NDCG}_se"] = _mean_se(row.ndcg)
            entry["users"] = len(row.ndcg)
            if base is not None and base.ndcg is not None:
                ratio, se = ratio_se(row.ndcg, base.ndcg)
                entry[f"{NDCG}_over_ease"], entry[f"{NDCG}_over_ease_paired_se"] = ratio, se
        entry |= {"params": row.params, "validation": row.validation, "note": row.note}
        out.append(entry)
    return out
