import numpy as np
import pytest

from common.errors import ConfigError
from simulations.synthetic import SyntheticSpec, generate_federation


def test_same_seed_same_federation_other_seed_differs():
    spec = SyntheticSpec(num_merchants=3, num_users=90, num_items=60, seed=11)
    a, b = generate_federation(spec), generate_federation(spec)
    c = generate_federation(SyntheticSpec(num_merchants=3, num_users=90, num_items=60, seed=12))
    for field in ("user_id", "item_id", "timestamp", "event_type", "value", "merchant_id"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert len(a) != len(c) or not np.array_equal(a.item_id, c.item_id)


def test_merchants_differ_in_size_and_catalog():
    events = generate_federation(SyntheticSpec(num_merchants=5, num_users=1000, num_items=300))
    names = sorted(set(events.merchant_id))
    assert len(names) == 5
    users = [len(set(events.user_id[events.merchant_id == m])) for m in names]
    catalogs = [set(events.item_id[events.merchant_id == m]) for m in names]
    assert max(users) > 1.5 * min(users)  # user bases of different sizes
    overlap = len(catalogs[0] & catalogs[1]) / len(catalogs[0] | catalogs[1])
    assert 0.05 < overlap < 0.95  # overlapping but different catalogs


def test_popularity_is_heavy_tailed_and_fields_valid():
    events = generate_federation(SyntheticSpec(num_merchants=2, num_users=500, num_items=200))
    counts = np.sort(np.unique(events.item_id, return_counts=True)[1])[::-1]
    # The top 10% of items draw more than twice their uniform share of events.
    assert counts[: len(counts) // 10].sum() > 0.2 * counts.sum()
    assert set(events.event_type) <= {"view", "cart", "purchase"}
    assert events.value.min() >= 1 and events.value.max() <= 5
    for user in list(set(events.user_id))[:20]:
        times = events.timestamp[events.user_id == user]
        assert np.all(np.diff(times) > 0)


def test_invalid_spec_lists_all_problems():
    with pytest.raises(ConfigError, match="num_merchants must be >= 1.*temperature must be > 0"):
        SyntheticSpec(num_merchants=0, temperature=0)
