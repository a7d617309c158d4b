"""Differentially private item counts: the Gaussian mechanism on bounded contributions.

With unit ``user`` each user contributes ``1 / sqrt(m)`` to each of their ``m``
distinct training items (at most ``cap``, sampled if more), so a user's whole
contribution vector has L2 norm at most 1. With unit ``interaction`` each
interaction contributes 1 to its item. Either way the L2 sensitivity is 1 and
``N(0, sigma^2)`` noise per item makes the release one Gaussian-mechanism event
(``PrivacyEvent(sigma, sample_rate=1, steps=1)``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.data.dataset import UserItemData


def bounded_pairs(
    users: npt.NDArray[np.int64],
    items: npt.NDArray[np.int64],
    *,
    num_users: int,
    width: int,
    cap: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each user's distinct items (ids below ``width``), at most ``cap`` drawn at random,
    weighted ``1 / sqrt(kept)``: COO triples ``(user, item, weight)`` whose per-user L2
    norm is at most 1 (the bounded contribution of every user-level release here)."""
    pairs = np.unique(users * np.int64(width) + items)  # distinct (user, item)
    pair_user, pair_item = pairs // max(width, 1), pairs % max(width, 1)
    order = np.lexsort((rng.random(len(pairs)), pair_user))  # a random order within each user
    per_user = np.bincount(pair_user, minlength=num_users)
    first = np.cumsum(per_user) - per_user
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[order] = np.arange(len(pairs)) - first[pair_user[order]]
    keep = rank < cap
    kept = np.minimum(per_user, cap)
    weight = 1.0 / np.sqrt(np.maximum(kept[pair_user[keep]], 1))
    return pair_user[keep], pair_item[keep], weight


def item_contributions(
    data: UserItemData, *, unit: str, cap: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Summed, sensitivity-1 contributions per item, shape (num_items,), before noise."""
    if unit == "interaction":
        counted: npt.NDArray[np.float64] = np.bincount(
            data.train_items, minlength=data.num_items
        ).astype(np.float64)
        return counted
    users = np.repeat(np.arange(data.num_users), np.diff(data.train_indptr))  # (num_train,)
    _, pair_item, weight = bounded_pairs(
        users, data.train_items, num_users=data.num_users, width=data.num_items, cap=cap, rng=rng
    )
    summed: npt.NDArray[np.float64] = np.bincount(
        pair_item, weights=weight, minlength=data.num_items
    ).astype(np.float64)
    return summed


def noisy_item_counts(
    data: UserItemData,
    *,
    unit: str,
    cap: int,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """Contributions plus N(0, noise_multiplier^2) per item: one Gaussian-mechanism release."""
    exact = item_contributions(data, unit=unit, cap=cap, rng=rng)
    return exact + rng.normal(0.0, noise_multiplier, size=exact.shape)


def trained_items(
    noisy_counts: npt.NDArray[np.float64], *, noise_std: float, threshold: float
) -> npt.NDArray[np.int64]:
    """Items whose noisy count clears ``threshold`` noise standard deviations (sorted ids)."""
    return np.flatnonzero(noisy_counts >= threshold * noise_std).astype(np.int64)


def most_counted(noisy_counts: npt.NDArray[np.float64], top: int) -> npt.NDArray[np.int64]:
    """The ``top`` items of highest noisy count (ties: lower id first), as sorted ids."""
    order = np.lexsort((np.arange(len(noisy_counts)), -noisy_counts))
    return np.sort(order[:top]).astype(np.int64)


def combine_releases(
    first: npt.NDArray[np.float64],
    first_std: float,
    second: npt.NDArray[np.float64],
    second_std: float,
) -> tuple[npt.NDArray[np.float64], float]:
    """Two noisy releases of the same counts averaged by inverse variance, and the std of
    the average, ``(first_std^-2 + second_std^-2)^-1/2`` (post-processing: no privacy cost)."""
    if not (first_std > 0 and second_std > 0):
        raise ValueError(f"noise stds must be > 0, got {first_std} and {second_std}")
    a, b = first_std**-2, second_std**-2
    combined: npt.NDArray[np.float64] = (a * first + b * second) / (a + b)
    return combined, float((a + b) ** -0.5)
