"""Tie-aware leave-last-out ranking metrics over the full catalog: by hand, oracles, properties.

Also the accumulator that averages per-user metrics over chunks.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.constants import AUC, hr_at, ndcg_at, recall_at
from common.metrics.ranking import (
    RankingAccumulator,
    count_candidates,
    full_ranking_metrics,
    full_ranking_positions,
    mean_metrics,
    metrics_from_positions,
)
from tests.common.metrics.ranking_helpers import INF, _csr, _problems

# Two users, six items.
# user 0: target 2 (0.5); excluded {0, 3} (0.9, 0.7). Candidates 1 (0.1), 4 (0.5), 5 (0.3)
#         -> g = 0 above, t = 1 tied (item 4); n_candidates = 6 - 1 - 2 = 3.
# user 1: target 4 (0.6); excluded {1} (0.8). Candidates 0 (0.2), 2 (0.8), 3 (0.4), 5 (0.8)
#         -> g = 2 above (items 2, 5), t = 0; n_candidates = 6 - 1 - 1 = 4.
SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.7, 0.5, 0.3],
        [0.2, 0.8, 0.8, 0.4, 0.6, 0.8],
    ]
)
TARGETS = np.array([2, 4])
INDPTR = np.array([0, 2, 3])
INDICES = np.array([0, 3, 1])

# --- full ranking positions --------------------------------------------------


def test_positions_two_users_by_hand() -> None:
    # Prepare: SCORES / TARGETS / exclusions above.
    # Execute
    greater, ties = full_ranking_positions(
        SCORES, TARGETS, exclude_indptr=INDPTR, exclude_indices=INDICES
    )
    n_cand = count_candidates(
        n_items=6, targets=TARGETS, exclude_indptr=INDPTR, exclude_indices=INDICES
    )
    # Assert
    assert greater.tolist() == [0, 2]
    assert ties.tolist() == [1, 0]
    assert n_cand.tolist() == [3, 4]


def test_metrics_two_users_by_hand() -> None:
    # Prepare: user 0 has g=0, t=1; user 1 has g=2, t=0 (see SCORES).
    # HR@1:  user 0 clip(1-0, 0, 2)/2 = 1/2; user 1 clip(1-2, 0, 1)/1 = 0
    # HR@3:  user 0 clip(3, 0, 2)/2 = 1;     user 1 clip(1, 0, 1)/1 = 1
    # NDCG@3: user 0 r in {0, 1}: (1/log2(2) + 1/log2(3))/2; user 1 r = 2: 1/log2(4) = 1/2
    # AUC:   user 0 1 - (0 + 1/2)/3 = 5/6;  user 1 1 - 2/4 = 1/2
    # Execute
    m = full_ranking_metrics(
        SCORES, TARGETS, exclude_indptr=INDPTR, exclude_indices=INDICES, k=[1, 3]
    )
    # Assert
    assert m[hr_at(1)] == pytest.approx([0.5, 0.0])
    assert m[hr_at(3)] == pytest.approx([1.0, 1.0])
    assert m[ndcg_at(1)] == pytest.approx([0.5, 0.0])
    assert m[ndcg_at(3)] == pytest.approx([(1.0 + 1.0 / math.log2(3)) / 2, 0.5])
    assert m[recall_at(3)] == pytest.approx(m[hr_at(3)])
    assert m[AUC] == pytest.approx([5 / 6, 0.5])
    assert mean_metrics(m)[AUC] == pytest.approx((5 / 6 + 0.5) / 2)
    assert set(m) == {hr_at(1), ndcg_at(1), recall_at(1), hr_at(3), ndcg_at(3), recall_at(3), AUC}


def test_exclusion_of_training_items_changes_the_rank() -> None:
    # Prepare: user 0 without exclusions: 0.9 and 0.7 are above 0.5 -> g = 2, t = 1.
    # HR@3 = clip(3 - 2, 0, 2)/2 = 1/2 (was 1 with exclusions).
    empty_ptr, empty_idx = _csr([[], []])
    # Execute
    greater, ties = full_ranking_positions(
        SCORES, TARGETS, exclude_indptr=empty_ptr, exclude_indices=empty_idx
    )
    m = metrics_from_positions(greater, ties, k=3)
    # Assert
    assert greater.tolist() == [2, 3]
    assert ties.tolist() == [1, 0]
    assert m[hr_at(3)] == pytest.approx([0.5, 0.0])


def test_target_scored_minus_inf_does_not_tie_with_excluded_items() -> None:
    # Prepare: target 0 scores -inf; item 2 (-inf) is excluded, item 3 (-inf) is a candidate.
    # Candidates 1 (0.3) and 3 (-inf): g = 1, t = 1 (only item 3). HR@2 = clip(1, 0, 2)/2.
    scores = np.array([[-INF, 0.3, -INF, -INF], [0.1, 0.2, 0.3, 0.4]])
    indptr, indices = _csr([[2], [0]])
    # Execute
    greater, ties = full_ranking_positions(
        scores, [0, 3], exclude_indptr=indptr, exclude_indices=indices
    )
    m = metrics_from_positions(greater, ties, k=[1, 2])
    # Assert
    assert greater.tolist() == [1, 0]
    assert ties.tolist() == [1, 0]
    assert m[hr_at(1)].tolist() == [0.0, 1.0]
    assert m[hr_at(2)].tolist() == [0.5, 1.0]


def test_exclusion_equal_to_target_and_duplicates_are_harmless() -> None:
    # Prepare: user excludes {2, 2, 0} with target 2 -> the target is still ranked,
    # item 0 is excluded once: candidates 1 (0.2), 3 (0.9) -> g = 1, t = 0, n_candidates = 2.
    scores = np.array([[0.8, 0.2, 0.5, 0.9]])
    indptr, indices = _csr([[2, 2, 0]])
    # Execute
    greater, ties = full_ranking_positions(
        scores, [2], exclude_indptr=indptr, exclude_indices=indices
    )
    n_cand = count_candidates(
        n_items=4, targets=[2], exclude_indptr=indptr, exclude_indices=indices
    )
    # Assert
    assert (greater.tolist(), ties.tolist(), n_cand.tolist()) == ([1], [0], [2])


def test_user_without_candidates_has_nan_auc_ignored_by_mean() -> None:
    # Prepare: user 0 excludes every other item -> n_candidates 0, g = t = 0, HR@1 = 1.
    scores = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    indptr, indices = _csr([[0, 1], []])
    # Execute: user 1 target 0 is last of 3: g = 2, AUC = 1 - 2/2 = 0.
    m = full_ranking_metrics(scores, [2, 0], exclude_indptr=indptr, exclude_indices=indices, k=1)
    # Assert
    assert math.isnan(m[AUC][0]) and m[AUC][1] == 0.0
    assert mean_metrics(m) == {hr_at(1): 0.5, ndcg_at(1): 0.5, recall_at(1): 0.5, AUC: 0.0}


def test_bad_inputs_fail_with_reasons() -> None:
    with pytest.raises(ValueError, match="NaN"):
        full_ranking_positions(
            np.array([[0.1, np.nan]]), [0], exclude_indptr=[0, 0], exclude_indices=[]
        )
    with pytest.raises(ValueError, match="exclude_indptr"):
        full_ranking_positions(SCORES, TARGETS, exclude_indptr=[0, 3], exclude_indices=INDICES)
    with pytest.raises(ValueError, match="exclude_indices"):
        full_ranking_positions(SCORES, TARGETS, exclude_indptr=[0, 1, 1], exclude_indices=[6])
    with pytest.raises(ValueError, match="targets"):
        full_ranking_positions(SCORES, [0, 9], exclude_indptr=INDPTR, exclude_indices=INDICES)
    with pytest.raises(ValueError, match="k must be"):
        metrics_from_positions([0], [0], k=0)


# --- tie-aware expectations --------------------------------------------------


def test_ties_straddling_the_cutoff() -> None:
    # Prepare: g = 8, t = 3 -> r uniform on {8, 9, 10, 11}; K = 10 keeps r in {8, 9}.
    # HR@10 = 2/4; NDCG@10 = (1/log2(10) + 1/log2(11))/4; AUC with 20 candidates
    # = 1 - (8 + 3/2)/20 = 0.525.
    # Execute
    m = metrics_from_positions([8], [3], k=10, n_candidates=20)
    # Assert
    assert m[hr_at(10)] == pytest.approx([0.5])
    assert m[ndcg_at(10)] == pytest.approx([(1 / math.log2(10) + 1 / math.log2(11)) / 4])
    assert m[AUC] == pytest.approx([0.525])


def test_all_items_tied_popularity_style() -> None:
    # Prepare: 99 candidates all tied with the target: g = 0, t = 99 -> r uniform on 0..99.
    # HR@10 = 10/100; NDCG@10 = sum_{r<10} 1/log2(r+2) / 100; AUC = 1 - 49.5/99 = 1/2.
    # Execute
    m = metrics_from_positions([0], [99], k=10, n_candidates=99)
    # Assert
    assert m[hr_at(10)] == pytest.approx([0.1])
    assert m[ndcg_at(10)] == pytest.approx([sum(1 / math.log2(r + 2) for r in range(10)) / 100])
    assert m[AUC] == pytest.approx([0.5])


@settings(max_examples=200, deadline=None)
@given(
    g=st.integers(0, 60),
    t=st.integers(0, 60),
    k1=st.integers(1, 50),
    dk=st.integers(0, 50),
)
def test_hr_monotone_in_k_and_ndcg_bounded_by_hr(g: int, t: int, k1: int, dk: int) -> None:
    # Execute
    m = metrics_from_positions([g], [t], k=[k1, k1 + dk])
    hr1, hr2 = m[hr_at(k1)][0], m[hr_at(k1 + dk)][0]
    ndcg1 = m[ndcg_at(k1)][0]
    # Assert
    assert hr1 <= hr2 + 1e-12
    assert 0.0 <= ndcg1 <= hr1 + 1e-12 and hr1 <= 1.0


def _slow_positions(
    scores: np.ndarray, targets: np.ndarray, excluded: list[set[int]]
) -> tuple[list[int], list[int]]:
    greater, ties = [], []
    for u, target in enumerate(targets):
        cands = [i for i in range(scores.shape[1]) if i != target and i not in excluded[u]]
        greater.append(sum(scores[u, i] > scores[u, target] for i in cands))
        ties.append(sum(scores[u, i] == scores[u, target] for i in cands))
    return greater, ties


@settings(max_examples=150, deadline=None)
@given(problem=_problems(tied=False))
def test_no_ties_positions_equal_argsort_rank(
    problem: tuple[np.ndarray, np.ndarray, list[set[int]]],
) -> None:
    # Prepare
    scores, targets, excluded = problem
    indptr, indices = _csr([sorted(e) for e in excluded])
    expected = []
    for u, target in enumerate(targets):
        kept = [target] + [
            i for i in range(scores.shape[1]) if i != target and i not in excluded[u]
        ]
        order = np.argsort(-scores[u, kept], kind="stable")
        expected.append(int(np.flatnonzero(order == 0)[0]))
    # Execute
    greater, ties = full_ranking_positions(
        scores, targets, exclude_indptr=indptr, exclude_indices=indices
    )
    # Assert
    assert greater.tolist() == expected
    assert ties.tolist() == [0] * len(targets)


@settings(max_examples=150, deadline=None)
@given(problem=_problems(tied=True))
def test_tied_positions_equal_slow_oracle(
    problem: tuple[np.ndarray, np.ndarray, list[set[int]]],
) -> None:
    # Prepare
    scores, targets, excluded = problem
    indptr, indices = _csr([sorted(e) for e in excluded])
    # Execute
    greater, ties = full_ranking_positions(
        scores, targets, exclude_indptr=indptr, exclude_indices=indices
    )
    # Assert
    assert (greater.tolist(), ties.tolist()) == _slow_positions(scores, targets, excluded)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(0, 2), min_size=2, max_size=6),
    data=st.data(),
)
def test_tie_aware_metrics_equal_average_over_all_tie_breaks(
    values: list[int], data: st.DataObject
) -> None:
    # Prepare: one user; every permutation of the items is an equally likely tie-break key.
    n_items = len(values)
    target = data.draw(st.integers(0, n_items - 1))
    excluded = data.draw(st.sets(st.sampled_from([i for i in range(n_items) if i != target])))
    cands = [i for i in range(n_items) if i != target and i not in excluded]
    ks = list(range(1, n_items + 1))
    hr_sum, ndcg_sum, auc_sum, n_perm = np.zeros(n_items), np.zeros(n_items), 0.0, 0
    for key in itertools.permutations(range(n_items)):
        ranked = sorted([target, *cands], key=lambda i: (-values[i], key[i]))
        r = ranked.index(target)
        hr_sum += [r < k for k in ks]
        ndcg_sum += [1 / math.log2(r + 2) if r < k else 0.0 for k in ks]
        auc_sum += 1 - r / len(cands) if cands else 0.0
        n_perm += 1
    indptr, indices = _csr([sorted(excluded)])
    # Execute
    m = full_ranking_metrics(
        np.array([values], dtype=float), [target], exclude_indptr=indptr,
        exclude_indices=indices, k=ks,
    )  # fmt: skip
    # Assert
    for j, k in enumerate(ks):
        assert m[hr_at(k)][0] == pytest.approx(hr_sum[j] / n_perm)
        assert m[ndcg_at(k)][0] == pytest.approx(ndcg_sum[j] / n_perm)
    if cands:
        assert m[AUC][0] == pytest.approx(auc_sum / n_perm)


# --- accumulator -----------------------------------------------------------------


def test_accumulator_means_over_chunks_and_returns_per_user_values() -> None:
    # Prepare: chunk 1 HR@10 = [1, 0], chunk 2 HR@10 = [1] -> mean 2/3.
    acc = RankingAccumulator()
    # Execute
    acc.add({hr_at(10): np.array([1.0, 0.0]), ndcg_at(10): np.array([0.5, 0.0])})
    acc.add({hr_at(10): np.array([1.0]), ndcg_at(10): np.array([1.0])})
    # Assert
    assert acc.n_users == 3
    assert acc.means() == pytest.approx({hr_at(10): 2 / 3, ndcg_at(10): 0.5})
    np.testing.assert_array_equal(acc.per_user()[hr_at(10)], [1.0, 0.0, 1.0])


def test_accumulator_rejects_inconsistent_chunks_and_is_empty_at_start() -> None:
    acc = RankingAccumulator()
    assert (acc.n_users, acc.means(), acc.per_user()) == (0, {}, {})
    acc.add({hr_at(10): [1.0]})
    with pytest.raises(ValueError, match="metric names"):
        acc.add({ndcg_at(10): [1.0]})
    with pytest.raises(ValueError, match="one value per user"):
        RankingAccumulator().add({hr_at(10): [1.0], ndcg_at(10): [1.0, 0.0]})
