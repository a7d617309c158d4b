import numpy as np
import torch

from client.training.loop import per_user_loss
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.models import ModelConfig, build_model
from common.models.batches import build_user_batch
from tests.conftest import make_events


def _data(items_per_user=(5, 2)):
    rows = [(f"u{u}", f"i{j}", j) for u, n in enumerate(items_per_user) for j in range(n + 1)]
    events = make_events(rows)
    return build_user_item_data(events, ItemCatalog.from_keys([f"i{j}" for j in range(20)]))


def _batch(data, users, *, cap=10, negatives=1, explicit=False, seed=0):
    return build_user_batch(
        data,
        np.array(users),
        max_interactions_per_user=cap,
        num_negatives=negatives,
        explicit=explicit,
        rng=np.random.default_rng(seed),
    )


def test_rows_per_user_follow_cap_and_negatives():
    data = _data((5, 2))  # train items: u0 has 5, u1 has 2
    batch = _batch(data, [0, 1], cap=3, negatives=4, explicit=False, seed=0)
    slot = batch.row_slot.numpy()
    # u0: 3 positives (capped) + 12 negatives; u1: 2 positives + 8 negatives
    assert np.bincount(slot).tolist() == [15, 10]
    assert batch.labels[slot == 0].sum() == 3 and batch.labels[slot == 1].sum() == 2
    # Each user's row weights sum to one: every user counts equally.
    sums = torch.zeros(2).index_add_(0, batch.row_slot, batch.row_weight)
    torch.testing.assert_close(sums, torch.ones(2))


def test_positives_are_the_users_own_training_items():
    data = _data((5, 2))
    batch = _batch(data, [1, 0], cap=10, negatives=1, explicit=False, seed=1)
    positives = batch.labels.numpy() == 1
    for slot, user in enumerate([1, 0]):
        got = sorted(batch.row_items.numpy()[positives & (batch.row_slot.numpy() == slot)])
        assert got == sorted(data.items_of(user).tolist())


def test_cap_samples_a_subset_without_replacement():
    data = _data((6,))
    seen = set()
    for seed in range(20):
        batch = _batch(data, [0], cap=2, negatives=1, explicit=True, seed=seed)
        items = batch.row_items.tolist()
        assert len(items) == 2 and len(set(items)) == 2
        seen.update(items)
    assert seen == set(data.items_of(0).tolist())


def test_batch_loss_is_sum_of_independent_per_user_losses():
    data = _data((5, 2))
    model = build_model(
        ModelConfig(embedding_dim=4),
        num_users=2,
        num_items=20,
        generator=torch.Generator().manual_seed(0),
    )
    config = TrainConfig(weight_decay=0.01)
    both = _batch(data, [0, 1], cap=10, negatives=2, explicit=True, seed=0)
    alone = _batch(data, [1], cap=10, negatives=2, explicit=True, seed=0)
    losses = per_user_loss(model, both, config)
    torch.testing.assert_close(losses[1], per_user_loss(model, alone, config)[0])
