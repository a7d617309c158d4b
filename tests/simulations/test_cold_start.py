"""Cold start: users hidden from training, folded in from 5 interactions, against trained users."""

from __future__ import annotations

import numpy as np

from common.config import parse_run_config
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from simulations.cold_start import hide_users, run_cold_start
from simulations.synthetic import SyntheticSpec, generate_federation


def _data(mean_events: float, *, users: int = 1200, items: int = 400):
    events = generate_federation(
        SyntheticSpec(num_users=users, num_items=items, mean_events=mean_events, seed=0)
    )
    return build_user_item_data(events, ItemCatalog.from_keys(events.item_id))


def test_hidden_users_leave_no_trace_in_training_data() -> None:
    data = _data(12, users=300, items=100)
    train, hidden = hide_users(data, fraction=0.2, min_items=5, rng=np.random.default_rng(0))
    assert len(hidden) > 0
    assert not np.isin(train.train_users, hidden).any()
    assert not np.isin(train.test_users, hidden).any()
    assert train.num_train == data.num_train - sum(len(data.items_of(u)) for u in hidden)
    for user in hidden:
        assert len(data.items_of(user)) >= 5 and user in set(data.test_users.tolist())


def test_users_folded_in_from_five_items_reach_080_of_trained_users() -> None:
    """Trained users have ~7 training items here; hidden users give 5 (random, seeded).

    With longer histories the ratio falls (benchmarks/cold_start.py: 0.77 at ~11
    items, 0.65 at ~24; folding in the whole history reaches 1.0-1.15x: the gap is
    what 5 items cannot say, not the fold-in).
    """
    config = parse_run_config({"weight-decay": 0.01, "seed": 0})
    result = run_cold_start(_data(8), config, epochs=20, recent=5, choose="random")
    assert 5 < result.mean_trained_history < 9
    assert result.folded_users >= 40
    assert result.ratio >= 0.8, result
    # Fold-in is what gets there: popularity alone does much worse for the same users.
    assert result.folded_ndcg > 1.5 * result.popularity_ndcg, result
