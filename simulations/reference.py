"""EASE^R: the strong centralised reference printed beside the federated model.

The federated model is judged by ratios, so the model in the denominator must
be strong and tuned honestly. EASE^R (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019) is a closed-form item-item model that
is hard to beat on implicit-feedback benchmarks: with the binary user-item
training matrix ``X``,

    G = XᵀX + λI,   P = G⁻¹,   B_ij = -P_ij / P_jj,   B_jj = 0,

and a user's scores are ``X_u · B``. Its one setting, λ, is chosen on a
validation split carved from the *training* data only (each user's last
training item held out), then the model is refitted on all training data and
evaluated once on the real test items. It needs a dense ``items x items``
inverse, so catalogs above :data:`EASE_MAX_ITEMS` are refused.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.constants import ndcg_at
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.evaluation import EvaluationResult, evaluate_scores
from common.seeding import numpy_rng

logger = logging.getLogger(__name__)

EASE_METHOD = "EASE^R"
REFERENCE = "reference"  # metrics.json: the strong reference (method, λ, validation, metrics)
CENTRALISED = (
    "centralised"  # metrics.json: the federation's model and settings trained on pooled data
)
EASE_MAX_ITEMS = 20_000  # a dense float64 inverse of 20k x 20k items is 3.2 GB
# Half-decade steps: the best λ grows with the interactions per item (Steck: 500 on ML-20M).
LAMBDA_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
FALLBACK_LAMBDA = 100.0  # when no user has 2 training items to validate on

FloatMatrix = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EaseResult:
    """EASE^R on the real test items, with how its λ was chosen."""

    evaluation: EvaluationResult
    lam: float
    validation: dict[float, float]  # λ -> validation NDCG@k; empty when λ was given or untunable
    seconds: float


def check_ease_size(num_items: int) -> None:
    """Refuse catalogs whose dense ``items x items`` inverse would not fit."""
    if num_items > EASE_MAX_ITEMS:
        gib = num_items**2 * 8 / 2**30
        raise ConfigError(
            f"EASE^R needs a dense {num_items} x {num_items} inverse ({gib:.1f} GiB in float64); "
            f"the catalog has {num_items} items, above the limit of {EASE_MAX_ITEMS}."
        )


def binary_matrix(data: UserItemData) -> Any:
    """The binary training matrix X as scipy CSR (users x items, float64)."""
    from scipy.sparse import csr_matrix

    x = csr_matrix(
        (np.ones(data.num_train), data.train_items, data.train_indptr),
        shape=(data.num_users, data.num_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # binary, even if a pair was listed twice
    return x


def _gram(data: UserItemData) -> FloatMatrix:
    """XᵀX of the binary training matrix, shape (num_items, num_items)."""
    x = binary_matrix(data)
    return np.asarray((x.T @ x).toarray(), dtype=np.float64)


def _weights_from_gram(gram: FloatMatrix, lam: float) -> FloatMatrix:
    if not lam > 0:
        raise ConfigError(f"EASE^R's λ must be > 0, got {lam}.")
    g = gram.copy()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)  # (items, items)
    b = -p / np.diag(p)  # column j divided by P_jj
    np.fill_diagonal(b, 0.0)
    return b


def ease_weights(data: UserItemData, lam: float) -> FloatMatrix:
    """The EASE^R item-item matrix B of ``data``'s training pairs, shape (num_items, num_items)."""
    check_ease_size(data.num_items)
    return _weights_from_gram(_gram(data), lam)


def validation_split(data: UserItemData) -> UserItemData:
    """Training data only, leave-last-out again: each user's last training item becomes the test.

    Users with 2 or more training items give their latest one (training items
    are stored oldest first); the rest only train. ``data``'s test items are
    never read.
    """
    counts = np.diff(data.train_indptr)
    held = counts >= 2
    last = data.train_indptr[1:][held] - 1  # position of each held-out item
    keep = np.ones(data.num_train, dtype=bool)
    keep[last] = False
    indptr = np.zeros(data.num_users + 1, dtype=np.int64)
    np.cumsum(counts - held, out=indptr[1:])
    return UserItemData(
        user_keys=data.user_keys,
        num_items=data.num_items,
        train_indptr=indptr,
        train_items=data.train_items[keep],
        train_values=data.train_values[keep],
        test_users=np.flatnonzero(held).astype(np.int64),
        test_items=data.train_items[last],
        test_values=data.train_values[last],
        train_events=None if data.train_events is None else data.train_events[keep],
        test_events=None if data.train_events is None else data.train_events[last],
    )


def score_ease(
    data: UserItemData, weights: FloatMatrix, *, k: int, rng: np.random.Generator
) -> EvaluationResult:
    """Evaluate ``X_u · B`` for ``data``'s test users, X_u sparse: a user's few training
    items select rows of B, so scoring costs users x history x items, not users x items²."""
    x = binary_matrix(data)
    return evaluate_scores(lambda users: np.asarray(x[users] @ weights), data, k=k, rng=rng)


def choose_ease_lambda(
    data: UserItemData, *, k: int, seed: int, grid: tuple[float, ...] = LAMBDA_GRID
) -> tuple[float, dict[float, float]]:
    """The λ of ``grid`` with the best validation NDCG@k, and the whole table λ -> NDCG@k.

    Ties go to the first λ of the grid. When no user has 2 training items
    there is nothing to validate on: :data:`FALLBACK_LAMBDA` and an empty table.
    """
    split = validation_split(data)
    if len(split.test_users) == 0:
        logger.warning("EASE^R: no user has 2 training items; λ=%g untuned", FALLBACK_LAMBDA)
        return FALLBACK_LAMBDA, {}
    gram = _gram(split)
    table: dict[float, float] = {}
    for lam in grid:
        result = score_ease(
            split,
            _weights_from_gram(gram, lam),
            k=k,
            rng=numpy_rng(seed, "evaluate", "ease-validation"),
        )
        table[lam] = result.means[ndcg_at(k)]
    best = max(grid, key=lambda lam: -math.inf if math.isnan(table[lam]) else table[lam])
    return best, table


def evaluate_ease(
    pooled: UserItemData, *, k: int, seed: int, lam: float | None = None
) -> EaseResult:
    """Tune λ on the validation split (unless given), refit on all training data, evaluate."""
    check_ease_size(pooled.num_items)
    started = time.perf_counter()
    validation: dict[float, float] = {}
    if lam is None:
        lam, validation = choose_ease_lambda(pooled, k=k, seed=seed)
    evaluation = score_ease(
        pooled, ease_weights(pooled, lam), k=k, rng=numpy_rng(seed, "evaluate", "ease")
    )
    return EaseResult(
        evaluation=evaluation,
        lam=lam,
        validation=validation,
        seconds=time.perf_counter() - started,
    )
