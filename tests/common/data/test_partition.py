import numpy as np
import pytest

from common.data.partition import PartitionConfig, partition_events
from common.errors import ConfigError
from simulations.synthetic import SyntheticSpec, generate_federation


@pytest.fixture(scope="module")
def events():
    return generate_federation(SyntheticSpec(num_merchants=4, num_users=300, num_items=120, seed=3))


def _owners(events, parts):
    owner = {}
    for name, rows in parts.items():
        for user in set(events.user_id[rows]):
            assert user not in owner, f"user {user} split across {owner.get(user)} and {name}"
            owner[user] = name
    return owner


@pytest.mark.parametrize("scheme", ["natural", "iid", "dirichlet", "device"])
def test_every_row_assigned_once_and_users_whole(events, scheme):
    parts = partition_events(events, PartitionConfig(scheme=scheme, num_parties=5, seed=1))
    rows = np.concatenate(list(parts.values()))
    assert sorted(rows.tolist()) == list(range(len(events)))
    owner = _owners(events, parts)
    assert len(owner) == events.num_users
    assert all(len(rows) > 0 for rows in parts.values())


def test_natural_follows_merchant_column(events):
    parts = partition_events(events, PartitionConfig(scheme="natural"))
    assert sorted(parts) == sorted(set(events.merchant_id))
    for name, rows in parts.items():
        assert set(events.merchant_id[rows]) == {name}


def test_iid_is_balanced_and_seeded(events):
    a = partition_events(events, PartitionConfig(scheme="iid", num_parties=3, seed=7))
    b = partition_events(events, PartitionConfig(scheme="iid", num_parties=3, seed=7))
    c = partition_events(events, PartitionConfig(scheme="iid", num_parties=3, seed=8))
    users = [len(set(events.user_id[r])) for r in a.values()]
    assert max(users) - min(users) <= 1
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_small_alpha_is_more_skewed_than_large(events):
    def spread(alpha):
        parts = partition_events(
            events, PartitionConfig(scheme="dirichlet", num_parties=5, alpha=alpha, seed=0)
        )
        sizes = np.array([len(set(events.user_id[r])) for r in parts.values()])
        return sizes.std() / sizes.mean()

    assert spread(0.05) > spread(100.0)


def test_device_gives_one_user_per_party(events):
    parts = partition_events(events, PartitionConfig(scheme="device"))
    assert len(parts) == events.num_users
    assert all(len(set(events.user_id[r])) == 1 for r in parts.values())


def test_natural_without_merchant_column_says_what_to_do(tiny_events):
    with pytest.raises(ConfigError, match="merchant_id column.*iid or dirichlet"):
        partition_events(tiny_events, PartitionConfig(scheme="natural"))


def test_more_parties_than_users_is_refused(tiny_events):
    with pytest.raises(ConfigError, match="Cannot split 3 users into 5 merchants"):
        partition_events(tiny_events, PartitionConfig(scheme="iid", num_parties=5))
