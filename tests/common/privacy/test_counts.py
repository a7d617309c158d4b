import numpy as np
import pytest

from common.privacy.counts import item_contributions, trained_items
from common.seeding import numpy_rng
from simulations.synthetic import SyntheticSpec, generate_federation


def _data():
    from common.data.catalog import ItemCatalog
    from common.data.dataset import build_user_item_data

    events = generate_federation(SyntheticSpec(num_merchants=1, num_users=60, num_items=40, seed=1))
    return build_user_item_data(events, ItemCatalog.from_keys(events.item_id))


def _user_items(data, user):
    return np.unique(data.train_items[data.train_indptr[user] : data.train_indptr[user + 1]])


def test_counts_are_a_sum_of_unit_norm_user_vectors():
    data = _data()
    cap = max(len(_user_items(data, u)) for u in range(data.num_users))  # no sampling
    oracle = np.zeros(data.num_items)
    for user in range(data.num_users):  # slow, obvious: one user at a time
        items = _user_items(data, user)
        if len(items):
            vector = np.zeros(data.num_items)
            vector[items] = 1 / np.sqrt(len(items))
            assert np.linalg.norm(vector) == pytest.approx(1.0)  # sensitivity 1
            oracle += vector
    got = item_contributions(data, unit="user", cap=cap, rng=numpy_rng(0, "c"))
    np.testing.assert_allclose(got, oracle, atol=1e-12)


def test_cap_keeps_at_most_cap_items_per_user():
    data = _data()
    got = item_contributions(data, unit="user", cap=2, rng=numpy_rng(0, "c"))
    kept = [min(len(_user_items(data, u)), 2) for u in range(data.num_users)]
    assert got.sum() == pytest.approx(sum(np.sqrt(k) for k in kept))


def test_interaction_unit_counts_interactions():
    data = _data()
    counts = item_contributions(data, unit="interaction", cap=5, rng=numpy_rng(0, "c"))
    assert counts.sum() == data.num_train


def test_trained_items_clear_the_threshold():
    counts = np.array([10.0, 2.9, 3.0, -1.0])
    assert trained_items(counts, noise_std=1.0, threshold=3.0).tolist() == [0, 2]
