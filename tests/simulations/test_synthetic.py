import numpy as np
import pytest

from common.errors import ConfigError
from simulations.synthetic import (
    DAY,
    START_TIMESTAMP,
    SyntheticSpec,
    generate_federation,
    item_side,
    static_model,
)


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


# --- the structures beyond the latent-factor model ------------------------------------------


def _sequences(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users, item indices and timestamps in time order per user, and the federation's items."""
    events = generate_federation(spec)
    order = np.lexsort((events.timestamp, events.user_id))
    items = np.array([int(key.removeprefix("item-")) for key in events.item_id[order]])
    return events.user_id[order], items, events.timestamp[order], order


def _pairs(users: np.ndarray, items: np.ndarray, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """(earlier, later) items ``gap`` events apart within the same user."""
    same = users[gap:] == users[:-gap]
    return items[:-gap][same], items[gap:][same]


def _cosine(factors: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    return float((unit[a] * unit[b]).sum(axis=1).mean())


SMALL = {"num_merchants": 3, "num_users": 600, "num_items": 400, "seed": 5}


def test_order_carries_signal_only_when_the_sequence_knobs_are_on():
    for spec, sequential in (
        (SyntheticSpec(**SMALL), True),
        (static_model(SyntheticSpec(**SMALL)), False),
    ):
        users, items, _, _ = _sequences(spec)
        factors = item_side(spec).factors
        next_one = _cosine(factors, *_pairs(users, items, 1))
        five_on = _cosine(factors, *_pairs(users, items, 5))
        if sequential:  # the last item sets the next one's intent; taste drifts away over time
            assert next_one > five_on + 0.1
        else:  # a static taste: order is exchangeable
            assert abs(next_one - five_on) < 0.03


def test_copurchase_and_repeats_appear_at_their_rates():
    spec = SyntheticSpec(**SMALL, copurchase_prob=0.3, repeat_prob=0.1)
    users, items, _, _ = _sequences(spec)
    earlier, later = _pairs(users, items, 1)
    complements = item_side(spec).complements
    follows = (complements[earlier] == later[:, None]).any(axis=1).mean()
    repeats = (earlier == later).mean()
    # A complement is skipped when unstocked, unlaunched or already had; repeats look back
    # up to a few items, so the immediate-repeat share sits below the knob.
    assert 0.15 < follows < 0.35
    assert 0.03 < repeats < 0.1
    static_users, static_items, _, _ = _sequences(static_model(SyntheticSpec(**SMALL)))
    earlier, later = _pairs(static_users, static_items, 1)
    assert (complements[earlier] == later[:, None]).any(axis=1).mean() < 0.03
    for user in np.unique(static_users):  # no repeats at all without the knob
        bought = static_items[static_users == user]
        assert len(np.unique(bought)) == len(bought)


def test_items_launch_inside_the_span_and_popularity_follows_its_trend():
    spec = SyntheticSpec(**SMALL, new_item_share=0.4, popularity_drift=2.0)
    _, items, times, _ = _sequences(spec)
    side = item_side(spec)
    seconds = times - START_TIMESTAMP
    launched = np.isfinite(side.launch)
    assert 0.3 < launched.mean() < 0.5
    assert np.all(seconds >= np.where(launched[items], side.launch[items], -np.inf))
    # Among always-available items, a rising trend moves events to the second half.
    half = spec.span_days * DAY / 2
    late = np.bincount(items[seconds > half], minlength=spec.num_items)
    early = np.bincount(items[seconds <= half], minlength=spec.num_items)
    seen = ~launched & (late + early >= 10)
    late_share = late[seen] / (late[seen] + early[seen])
    assert np.corrcoef(side.trend[seen], late_share)[0, 1] > 0.3


def test_invalid_sequence_knobs_are_named():
    with pytest.raises(ConfigError, match="taste_memory must be in \\[0, 1\\).*repeat_prob"):
        SyntheticSpec(taste_memory=1.0, repeat_prob=1.5)


def test_merchant_sizes_follow_a_power_law_within_the_range():
    from simulations.synthetic import merchant_sizes

    spec = SyntheticSpec(num_merchants=400, merchant_size_range=(200, 2000), seed=1)
    sizes = merchant_sizes(spec, np.random.default_rng(0))
    assert sizes.min() >= 200 and sizes.max() <= 2000 and len(sizes) == 400
    # log-uniform: the median is near the geometric mean (632), well below the midpoint (1100)
    assert 500 < np.median(sizes) < 800
    assert (sizes < 632).mean() == pytest.approx(0.5, abs=0.08)
    events = generate_federation(
        SyntheticSpec(num_merchants=4, num_items=60, merchant_size_range=(20, 60), seed=2)
    )
    users = {m: len(set(events.user_id[events.merchant_id == m])) for m in set(events.merchant_id)}
    assert len(users) == 4 and all(20 <= n <= 60 for n in users.values())
    with pytest.raises(ConfigError, match="merchant_size_range"):
        SyntheticSpec(merchant_size_range=(300, 200))
