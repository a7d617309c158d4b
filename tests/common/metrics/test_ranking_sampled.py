"""Ranking metrics, sampled protocol: hand-computed numbers, negatives' validity and uniformity."""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.constants import sampled_hr_at, sampled_ndcg_at
from common.metrics import ranking
from common.metrics.ranking import (
    metrics_from_positions,
    sample_negatives,
    sampled_positions,
)
from tests.common.metrics.ranking_helpers import _csr, _problems

# --- sampled protocol ----------------------------------------------------------


def test_sampled_positions_and_metrics_by_hand() -> None:
    # Prepare: target 0.5 vs negatives [0.9, 0.5, 0.1, 0.5] -> g = 1, t = 2.
    # sampled HR@2 = clip(2 - 1, 0, 3)/3 = 1/3; NDCG@2 = (1/log2(3))/3 (only r = 1 counts).
    # Execute
    greater, ties = sampled_positions(np.array([0.5]), np.array([[0.9, 0.5, 0.1, 0.5]]))
    m = metrics_from_positions(greater, ties, k=2, sampled=True)
    # Assert
    assert (greater.tolist(), ties.tolist()) == ([1], [2])
    assert set(m) == {sampled_hr_at(2), sampled_ndcg_at(2)}
    assert m[sampled_hr_at(2)] == pytest.approx([1 / 3])
    assert m[sampled_ndcg_at(2)] == pytest.approx([1 / math.log2(3) / 3])


def _check_negatives(
    negatives: np.ndarray, targets: np.ndarray, indptr: np.ndarray, indices: np.ndarray
) -> None:
    for u, row in enumerate(negatives):
        forbidden = set(indices[indptr[u] : indptr[u + 1]].tolist()) | {int(targets[u])}
        assert len(set(row.tolist())) == row.size, "negatives repeat within a user"
        assert not forbidden & set(row.tolist()), "a negative is excluded or the target"


@settings(max_examples=150, deadline=None)
@given(
    problem=_problems(tied=False),
    num_negatives=st.integers(0, 4),
    rounds=st.sampled_from([0, 1, 32]),  # 0: exact path only; 1: mixed; 32: as shipped
)
def test_sampled_negatives_avoid_exclusions_and_target(
    problem: tuple[np.ndarray, np.ndarray, list[set[int]]], num_negatives: int, rounds: int
) -> None:
    # Prepare
    scores, targets, excluded = problem
    n_items = scores.shape[1]
    rows = [sorted(e) for e in excluded]
    eligible = [n_items - 1 - len(r) for r in rows]
    indptr, indices = _csr(rows)
    kwargs: dict[str, Any] = dict(
        n_items=n_items, targets=targets, exclude_indptr=indptr, exclude_indices=indices
    )
    if min(eligible) < num_negatives:
        with pytest.raises(ValueError, match="fewer than num_negatives"):
            sample_negatives(**kwargs, num_negatives=num_negatives, rng=np.random.default_rng(0))
        return
    # Execute
    with mock.patch.object(ranking, "_MAX_REJECTION_ROUNDS", rounds):
        negatives = sample_negatives(
            **kwargs, num_negatives=num_negatives, rng=np.random.default_rng(0)
        )
    # Assert
    assert negatives.shape == (len(targets), num_negatives)
    _check_negatives(negatives, targets, indptr, indices)


def test_sampled_negatives_at_scale_are_valid_and_deterministic() -> None:
    # Prepare: 300 users, 1000 items, up to 600 training items each.
    rng = np.random.default_rng(7)
    rows = [sorted(rng.choice(1000, size=rng.integers(0, 600), replace=False)) for _ in range(300)]
    targets = np.array([next(i for i in range(1000) if i not in set(r)) for r in rows])
    indptr, indices = _csr(rows)
    kwargs: dict[str, Any] = dict(
        n_items=1000, targets=targets, exclude_indptr=indptr, exclude_indices=indices
    )
    # Execute
    first = sample_negatives(**kwargs, rng=np.random.default_rng(42))
    again = sample_negatives(**kwargs, rng=np.random.default_rng(42))
    other = sample_negatives(**kwargs, rng=np.random.default_rng(43))
    # Assert
    assert first.shape == (300, 99)
    _check_negatives(first, targets, indptr, indices)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_sampled_negatives_when_almost_everything_is_excluded() -> None:
    # Prepare: 5000 items, the user excluded all but the target (0) and items 10..14, so
    # rejection alone would take thousands of rounds; the exact completion must kick in.
    rows = [[i for i in range(1, 5000) if not 10 <= i < 15]]
    indptr, indices = _csr(rows)
    # Execute
    negatives = sample_negatives(
        n_items=5000, targets=[0], exclude_indptr=indptr, exclude_indices=indices,
        num_negatives=5, rng=np.random.default_rng(0),
    )  # fmt: skip
    # Assert
    assert sorted(negatives[0].tolist()) == [10, 11, 12, 13, 14]


def test_sampled_negatives_are_uniform() -> None:
    # Prepare: 5 items, target 1, item 0 excluded -> pick 2 of {2, 3, 4}; each item is in
    # a draw with probability 2/3, so over 3000 users each appears about 2000 times.
    n = 3000
    indptr = np.arange(n + 1)
    indices = np.zeros(n, dtype=np.int64)
    # Execute
    negatives = sample_negatives(
        n_items=5, targets=np.ones(n, dtype=np.int64), exclude_indptr=indptr,
        exclude_indices=indices, num_negatives=2, rng=np.random.default_rng(1),
    )  # fmt: skip
    counts = np.bincount(negatives.ravel(), minlength=5)
    # Assert: binomial sd = sqrt(3000 * 2/3 * 1/3) ~ 26; allow 5 sd.
    assert counts[:2].tolist() == [0, 0]
    assert np.all(np.abs(counts[2:] - 2000) < 130)


def test_sampled_negatives_refuse_users_with_too_few_items_and_list_them() -> None:
    # Prepare: 4 items; user 0 (target 0, excludes 1, 2) has 1 eligible item, user 1 has 3.
    indptr, indices = _csr([[1, 2], []])
    # Execute / Assert
    with pytest.raises(ValueError, match=r"1 users have fewer than num_negatives=2.*user 0: 1"):
        sample_negatives(
            n_items=4, targets=[0, 0], exclude_indptr=indptr, exclude_indices=indices,
            num_negatives=2, rng=np.random.default_rng(0),
        )  # fmt: skip
