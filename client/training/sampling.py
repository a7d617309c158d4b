"""Samplers: which units (users, or interactions) each training step sees.

A sampler yields one array of units per step, lazily, so its random draws
interleave with the steps' own draws in one fixed order (same seed, same run).

* :func:`sample_user_batches`: shuffled, fixed-size batches, ``epochs`` passes
  (local training, fitting users, the centralised baseline);
* :func:`sample_step_batches`: a fixed number of batches of distinct units drawn
  afresh (``local-steps``: the same work per round whatever the party's size);
* :func:`sample_bucketed_step_batches`: as ``sample_step_batches``, each batch from one
  group of units of similar size (sequence models: history length), so batches pad little;
* :func:`poisson_batches`: every unit independently with probability ``q``,
  Opacus's sampler (DP-SGD: what its privacy accounting assumes).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch


def sample_user_batches(
    users: npt.NDArray[np.int64], *, batch_users: int, epochs: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.int64]]:
    """Shuffled, fixed-size batches of users, ``epochs`` passes (the non-private sampler)."""
    for _ in range(epochs):
        order = rng.permutation(users)
        for start in range(0, len(order), batch_users):
            yield order[start : start + batch_users]


def sample_step_batches(
    users: npt.NDArray[np.int64], *, batch_users: int, steps: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.int64]]:
    """``steps`` batches, each of distinct users drawn afresh: a fixed amount of local work
    per round whatever the merchant's size."""
    size = min(batch_users, len(users))
    for _ in range(steps if size else 0):
        yield rng.choice(users, size=size, replace=False)


def sample_bucketed_step_batches(
    users: npt.NDArray[np.int64],
    sizes: npt.NDArray[np.int64],
    *,
    batch_users: int,
    steps: int,
    buckets: int,
    rng: np.random.Generator,
) -> Iterator[npt.NDArray[np.int64]]:
    """``steps`` batches of distinct users, each from one of ``buckets`` groups of users of
    similar ``sizes[user]`` (equal-count groups in size order).

    There are never more groups than whole batches of users (a party of 190 users and
    batches of 128 has one: the uniform draw), so a batch keeps its size. A group is drawn
    with probability proportional to its users, then ``batch_users`` of them: every user
    is in a step's batch with probability ``batch_users / len(users)`` as with
    :func:`sample_step_batches`, only batches mix less. Not a DP sampler: DP-SGD keeps
    Poisson.
    """
    order = users[np.argsort(sizes[users], kind="stable")]
    count = max(1, min(buckets, len(order) // max(batch_users, 1)))
    groups = [g for g in np.array_split(order, count) if len(g)]
    weights = np.asarray([len(g) for g in groups], dtype=np.float64)
    for _ in range(steps if len(order) else 0):
        group = groups[rng.choice(len(groups), p=weights / weights.sum())]
        yield rng.choice(group, size=min(batch_users, len(group)), replace=False)


def poisson_batches(
    population: npt.NDArray[np.int64],
    *,
    sample_rate: float,
    steps: int,
    generator: torch.Generator,
) -> Iterator[npt.NDArray[np.int64]]:
    """``steps`` Poisson samples of ``population`` (each unit with probability ``sample_rate``,
    drawn by Opacus's sampler from ``generator``); an empty sample is still a step."""
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    sampler = UniformWithReplacementSampler(  # refuses an empty population now, not at step 1
        num_samples=len(population), sample_rate=sample_rate, generator=generator, steps=steps
    )
    return (population[np.asarray(indices, dtype=np.int64)] for indices in sampler)
