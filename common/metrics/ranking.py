"""Leave-last-out ranking metrics with exact, tie-aware expectations.

Each evaluated user has exactly one held-out target item. Its *candidates* are
the items that are neither the target nor among the user's excluded (training)
items. With ``g`` candidates scoring strictly above the target and ``t``
scoring exactly equal, uniform random tie-breaking puts the target at a 0-based
rank ``r`` uniform on ``{g, ..., g + t}``; every metric is the exact expectation
over that draw, so tied scores (a popularity baseline) are scored fairly and
deterministically:

- ``HR@K = P(r < K) = clip(K - g, 0, t + 1) / (t + 1)``
- ``NDCG@K = E[1{r < K} / log2(r + 2)]``
- ``Recall@K``: with one target it equals HR@K; reported under its own key.
- ``AUC = 1 - (g + t / 2) / n_candidates`` (NaN for a user without candidates).

The sampled protocol of He et al. (2017) ranks the target among 99 negatives
drawn uniformly, without replacement, from the user's candidates.

Callers score users in chunks (a masked copy of each chunk's score rows is made)::

    acc = RankingAccumulator()
    for chunk in chunks:  # e.g. 1024 users each
        acc.add(full_ranking_metrics(scores_of(chunk), targets[chunk], k=[10, 20],
                                     exclude_indptr=ptr_of(chunk), exclude_indices=idx_of(chunk)))
    acc.means()  # {"hr@10": ..., "ndcg@10": ..., "recall@10": ..., ..., "auc": ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from common.constants import AUC, hr_at, ndcg_at, recall_at, sampled_hr_at, sampled_ndcg_at

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_MAX_REJECTION_ROUNDS = 32  # then the few rows still short are sampled exactly


def _as_csr(
    indptr: npt.ArrayLike, indices: npt.ArrayLike, *, n_users: int, n_items: int
) -> tuple[IntArray, IntArray]:
    ptr = np.asarray(indptr, dtype=np.int64)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if (
        ptr.shape != (n_users + 1,)
        or ptr[0] != 0
        or ptr[-1] != idx.size
        or np.any(np.diff(ptr) < 0)
    ):
        raise ValueError(
            f"exclude_indptr must be non-decreasing, shape ({n_users + 1},), start at 0 and end "
            f"at len(exclude_indices)={idx.size}; got shape {ptr.shape}"
        )
    if idx.size and (idx.min() < 0 or idx.max() >= n_items):
        raise ValueError(
            f"exclude_indices must be item ids in [0, {n_items}); "
            f"got range [{idx.min()}, {idx.max()}]"
        )
    return ptr, idx


def _as_targets(targets: npt.ArrayLike, *, n_users: int, n_items: int) -> IntArray:
    tgt = np.asarray(targets, dtype=np.int64)
    if tgt.shape != (n_users,):
        raise ValueError(f"targets must have shape ({n_users},), got {tgt.shape}")
    if tgt.size and (tgt.min() < 0 or tgt.max() >= n_items):
        raise ValueError(
            f"targets must be item ids in [0, {n_items}); got range [{tgt.min()}, {tgt.max()}]"
        )
    return tgt


def _forbidden_keys(tgt: IntArray, ptr: IntArray, idx: IntArray, n_items: int) -> IntArray:
    """Sorted unique keys ``user * n_items + item`` of every excluded item and every target."""
    rows = np.repeat(np.arange(tgt.size, dtype=np.int64), np.diff(ptr))
    keys = np.sort(np.concatenate([rows * n_items + idx, np.arange(tgt.size) * n_items + tgt]))
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys


def _first_occurrences(keys: IntArray) -> npt.NDArray[np.bool_]:
    """True where a key did not appear earlier in ``keys`` (sorting beats np.unique's hash)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    first = np.ones(keys.size, dtype=bool)
    first[order[1:]] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def _check_no_nan(scores: npt.NDArray[np.floating], name: str) -> None:
    if scores.size == 0:
        return
    bad = np.isnan(scores).reshape(scores.shape[0], -1).any(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} contain NaN for {rows.size} users (rows {rows[:10].tolist()}"
            f"{' ...' if rows.size > 10 else ''}); did training diverge?"
        )


def count_candidates(
    *,
    n_items: int,
    targets: npt.ArrayLike,
    exclude_indptr: npt.ArrayLike,
    exclude_indices: npt.ArrayLike,
) -> IntArray:
    """Candidates per user: items other than the target and not excluded. Shape (n_users,).

    Duplicate exclusions count once; an exclusion equal to the target is ignored.
    """
    tgt = _as_targets(targets, n_users=np.size(targets), n_items=n_items)
    ptr, idx = _as_csr(exclude_indptr, exclude_indices, n_users=tgt.size, n_items=n_items)
    keys = _forbidden_keys(tgt, ptr, idx, n_items)
    return n_items - np.bincount(keys // n_items, minlength=tgt.size).astype(np.int64)


def full_ranking_positions(
    scores: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    exclude_indptr: npt.ArrayLike,
    exclude_indices: npt.ArrayLike,
) -> tuple[IntArray, IntArray]:
    """Position of each user's target among its candidates over the whole catalog.

    Args:
        scores: (n_users, n_items) model scores; NaN is refused, +-inf is allowed.
        targets: (n_users,) held-out item id per user.
        exclude_indptr: (n_users + 1,) CSR row pointer of the items to exclude per user.
        exclude_indices: (nnz,) excluded item ids (training items); an entry equal to the
            user's target is ignored, so the target is always ranked.

    Returns:
        ``(greater, ties)``, each (n_users,) int64: candidates scoring strictly above the
        target, and candidates scoring exactly the same. Excluded items never count, even
        when the target itself scores ``-inf``.
    """
    raw = np.asarray(scores)
    if raw.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_users, n_items), got shape {raw.shape}")
    n_users, n_items = raw.shape
    tgt = _as_targets(targets, n_users=n_users, n_items=n_items)
    ptr, idx = _as_csr(exclude_indptr, exclude_indices, n_users=n_users, n_items=n_items)
    masked = raw.astype(raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.float64)
    _check_no_nan(masked, "scores")
    users = np.arange(n_users)
    target_scores = masked[users, tgt].copy()  # (n_users,)
    rows = np.repeat(users, np.diff(ptr))  # (nnz,) user of each exclusion
    masked[rows, idx] = -np.inf
    masked[users, tgt] = target_scores  # an exclusion equal to the target is ignored
    greater = np.count_nonzero(masked > target_scores[:, None], axis=1).astype(np.int64)
    ties = np.count_nonzero(masked == target_scores[:, None], axis=1).astype(np.int64) - 1
    # A target at -inf would tie with every masked exclusion: recount those rows exactly.
    low = np.flatnonzero(np.isneginf(target_scores))
    if low.size:
        tied = np.isneginf(masked[low])  # (n_low, n_items)
        where = np.full(n_users, -1)
        where[low] = np.arange(low.size)
        hit = where[rows] >= 0
        tied[where[rows[hit]], idx[hit]] = False
        tied[np.arange(low.size), tgt[low]] = False
        ties[low] = np.count_nonzero(tied, axis=1)
    return greater, ties


def sampled_positions(
    target_scores: npt.ArrayLike, negative_scores: npt.ArrayLike
) -> tuple[IntArray, IntArray]:
    """``(greater, ties)`` of each target (n_users,) among its negatives (n_users, m)."""
    pos = np.asarray(target_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if pos.ndim != 1 or neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(
            f"expected target_scores (n,) and negative_scores (n, m); "
            f"got {pos.shape} and {neg.shape}"
        )
    _check_no_nan(pos, "target_scores")
    _check_no_nan(neg, "negative_scores")
    greater = np.count_nonzero(neg > pos[:, None], axis=1).astype(np.int64)
    ties = np.count_nonzero(neg == pos[:, None], axis=1).astype(np.int64)
    return greater, ties


def metrics_from_positions(
    greater: npt.ArrayLike,
    ties: npt.ArrayLike,
    *,
    k: int | Sequence[int],
    n_candidates: npt.ArrayLike | None = None,
    sampled: bool = False,
) -> dict[str, FloatArray]:
    """Per-user tie-aware metrics, each (n_users,) float64, keyed by ``common.constants``.

    Full ranking (``sampled=False``) gives ``hr@K``, ``ndcg@K`` and ``recall@K`` (equal to
    HR@K under leave-last-out) for each K, plus ``auc`` when ``n_candidates`` (scalar or
    (n_users,)) is given. The sampled protocol gives ``sampled-hr@K`` and ``sampled-ndcg@K``.
    """
    g = np.asarray(greater, dtype=np.int64)
    t = np.asarray(ties, dtype=np.int64)
    ks = [k] if isinstance(k, (int, np.integer)) else list(k)
    if g.shape != t.shape or g.ndim != 1 or np.any(g < 0) or np.any(t < 0):
        raise ValueError(
            f"greater and ties must be non-negative (n_users,) arrays; "
            f"got shapes {g.shape} and {t.shape}"
        )
    if not ks or any(not isinstance(kk, (int, np.integer)) or kk < 1 for kk in ks):
        raise ValueError(f"k must be a positive int or a non-empty list of them, got {k!r}")
    out: dict[str, FloatArray] = {}
    for kk in ks:
        discount = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(kk) + 2.0))])
        hr = np.clip(kk - g, 0, t + 1) / (t + 1.0)
        ndcg = (discount[np.minimum(g + t + 1, kk)] - discount[np.minimum(g, kk)]) / (t + 1.0)
        if sampled:
            out[sampled_hr_at(kk)], out[sampled_ndcg_at(kk)] = hr, ndcg
        else:
            out[hr_at(kk)], out[ndcg_at(kk)], out[recall_at(kk)] = hr, ndcg, hr.copy()
    if n_candidates is not None:
        if sampled:
            raise ValueError("AUC is reported for the full ranking only; pass sampled=False")
        n = np.broadcast_to(np.asarray(n_candidates, dtype=np.int64), g.shape)
        if np.any(g + t > n):
            raise ValueError("n_candidates must be at least greater + ties for every user")
        with np.errstate(divide="ignore", invalid="ignore"):
            out[AUC] = np.where(n > 0, 1.0 - (g + t / 2.0) / n, np.nan)
    return out


def full_ranking_metrics(
    scores: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    exclude_indptr: npt.ArrayLike,
    exclude_indices: npt.ArrayLike,
    k: int | Sequence[int],
) -> dict[str, FloatArray]:
    """Scores (n_users, n_items) to per-user HR/NDCG/Recall@K and AUC over the full catalog."""
    greater, ties = full_ranking_positions(
        scores, targets, exclude_indptr=exclude_indptr, exclude_indices=exclude_indices
    )
    n_cand = count_candidates(
        n_items=np.shape(scores)[1],
        targets=targets,
        exclude_indptr=exclude_indptr,
        exclude_indices=exclude_indices,
    )
    return metrics_from_positions(greater, ties, k=k, n_candidates=n_cand)


def mean_metrics(per_user: Mapping[str, npt.ArrayLike]) -> dict[str, float]:
    """Mean over users of each metric, ignoring NaN (AUC of users without candidates).

    A metric with no finite value has mean NaN.
    """
    means: dict[str, float] = {}
    for name, values in per_user.items():
        v = np.asarray(values, dtype=np.float64)
        ok = ~np.isnan(v)
        means[name] = float(v[ok].mean()) if ok.any() else float("nan")
    return means


def sample_negatives(
    *,
    n_items: int,
    targets: npt.ArrayLike,
    exclude_indptr: npt.ArrayLike,
    exclude_indices: npt.ArrayLike,
    num_negatives: int = 99,
    rng: np.random.Generator,
) -> IntArray:
    """Draw negatives per user, uniformly without replacement from its candidates.

    Vectorised rejection sampling: all open slots draw at once, and a draw that is the
    target, excluded, or already drawn for that user is redrawn. Rows still short after
    a few rounds (users who excluded most of the catalog) are completed exactly.

    Returns:
        (n_users, num_negatives) int64 item ids, unique within each row.

    Raises:
        ValueError: a user has fewer than ``num_negatives`` candidates (all are listed).
    """
    if num_negatives < 0 or n_items < 1:
        raise ValueError(
            f"need num_negatives >= 0 and n_items >= 1, got {num_negatives}, {n_items}"
        )
    tgt = _as_targets(targets, n_users=np.size(targets), n_items=n_items)
    n_users = tgt.size
    ptr, idx = _as_csr(exclude_indptr, exclude_indices, n_users=n_users, n_items=n_items)
    forbidden = _forbidden_keys(tgt, ptr, idx, n_items)  # sorted, unique
    eligible = n_items - np.bincount(forbidden // n_items, minlength=n_users)
    short = np.flatnonzero(eligible < num_negatives)
    if short.size:
        listed = ", ".join(f"user {u}: {eligible[u]}" for u in short[:10])
        raise ValueError(
            f"{short.size} users have fewer than num_negatives={num_negatives} items to sample "
            f"from ({listed}{', ...' if short.size > 10 else ''}); lower num_negatives or "
            f"drop these users from the sampled evaluation"
        )
    out = np.full((n_users, num_negatives), -1, dtype=np.int64)
    open_ = np.ones(out.shape, dtype=bool)
    for _ in range(_MAX_REJECTION_ROUNDS):
        slot_u, slot_j = np.nonzero(open_)  # row-major: earlier slots win duplicates
        if slot_u.size == 0:
            return out
        keys = slot_u * n_items + rng.integers(0, n_items, size=slot_u.size)
        pos = np.minimum(np.searchsorted(forbidden, keys), max(forbidden.size - 1, 0))
        ok = forbidden[pos] != keys
        busy = slot_u[_first_occurrences(slot_u)]  # rows with open slots
        done = ~open_[busy]
        taken = out[busy][done] + np.repeat(busy, done.sum(axis=1)) * n_items
        ok &= _first_occurrences(np.concatenate([taken, keys]))[taken.size :]
        out[slot_u[ok], slot_j[ok]] = keys[ok] - slot_u[ok] * n_items
        open_[slot_u[ok], slot_j[ok]] = False
    for u in np.flatnonzero(open_.any(axis=1)):
        lo, hi = np.searchsorted(forbidden, [u * n_items, (u + 1) * n_items])
        row_forbidden = forbidden[lo:hi]
        left = np.setdiff1d(
            np.arange(n_items), np.concatenate([row_forbidden - u * n_items, out[u][~open_[u]]])
        )
        out[u, open_[u]] = rng.choice(left, size=int(open_[u].sum()), replace=False)
    return out


class RankingAccumulator:
    """Collects per-user metric arrays chunk by chunk; gives means or all values back."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[FloatArray]] = {}

    def add(self, per_user: Mapping[str, npt.ArrayLike]) -> None:
        """Append one chunk; its keys must match earlier chunks and arrays share a length."""
        arrays = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in per_user.items()}
        if self._chunks and set(arrays) != set(self._chunks):
            raise ValueError(
                f"metric names {sorted(arrays)} differ from earlier chunks' {sorted(self._chunks)}"
            )
        if len({a.size for a in arrays.values()}) > 1:
            raise ValueError("all metric arrays of a chunk must have one value per user")
        for name, values in arrays.items():
            self._chunks.setdefault(name, []).append(values)

    @property
    def n_users(self) -> int:
        """Users accumulated so far."""
        return sum(c.size for c in next(iter(self._chunks.values()), []))

    def per_user(self) -> dict[str, FloatArray]:
        """Every metric as one (n_users,) array, in the order users were added."""
        return {name: np.concatenate(chunks) for name, chunks in self._chunks.items()}

    def means(self) -> dict[str, float]:
        """Mean per metric (see :func:`mean_metrics`); empty when nothing was added."""
        return mean_metrics(self.per_user())
