"""Samplers: the length-bucketed step sampler keeps each user's chance and mixes lengths less."""

import numpy as np

from client.training.sampling import sample_bucketed_step_batches, sample_step_batches


def test_bucketed_batches_come_from_one_length_group_and_keep_each_users_chance():
    rng = np.random.default_rng(0)
    users = np.arange(400, dtype=np.int64)
    sizes = rng.integers(1, 51, size=400)  # history lengths 1..50
    steps, batch = 4000, 20

    drawn = list(
        sample_bucketed_step_batches(
            users, sizes, batch_users=batch, steps=steps, buckets=4, rng=rng
        )
    )

    assert len(drawn) == steps and all(len(b) == batch == len(set(b)) for b in drawn)
    order = np.argsort(sizes, kind="stable")
    group_of = np.empty(400, dtype=np.int64)
    for group, members in enumerate(np.array_split(order, 4)):
        group_of[members] = group
    assert all(len(set(group_of[b])) == 1 for b in drawn)  # one group per batch
    counts = np.bincount(np.concatenate(drawn), minlength=400)
    expected = steps * batch / 400  # 200: as for uniform batches
    assert abs(counts.mean() - expected) < 1e-9
    # Binomial(4000, 0.05): sd 13.8; every user within 5 sd of its expected count.
    assert np.abs(counts - expected).max() < 5 * np.sqrt(steps * 0.05 * 0.95)
    spread = np.mean([np.ptp(sizes[b]) for b in drawn])
    uniform = np.mean(
        [
            np.ptp(sizes[b])
            for b in sample_step_batches(users, batch_users=batch, steps=200, rng=rng)
        ]
    )
    assert spread < 0.4 * uniform  # a batch's lengths (its padding) spread far less


def test_a_party_too_small_for_its_buckets_gets_fewer_and_keeps_full_batches():
    users = np.arange(190, dtype=np.int64)  # one batch of 128 fits: one group, the uniform draw
    sizes = np.arange(190, dtype=np.int64)
    drawn = list(
        sample_bucketed_step_batches(
            users, sizes, batch_users=128, steps=50, buckets=8, rng=np.random.default_rng(2)
        )
    )
    assert all(len(b) == 128 for b in drawn)
    assert max(sizes[b].max() for b in drawn) - min(sizes[b].min() for b in drawn) > 150


def test_one_bucket_is_the_uniform_sampler_and_an_empty_party_has_no_steps():
    users = np.arange(10, dtype=np.int64)
    sizes = np.arange(10, dtype=np.int64)
    one = list(
        sample_bucketed_step_batches(
            users, sizes, batch_users=4, steps=3, buckets=1, rng=np.random.default_rng(1)
        )
    )
    assert [len(b) for b in one] == [4, 4, 4]
    empty = sample_bucketed_step_batches(
        users[:0], sizes, batch_users=4, steps=3, buckets=8, rng=np.random.default_rng(1)
    )
    assert list(empty) == []
