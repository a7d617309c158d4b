import numpy as np
import torch

from client.training.loop import train_local
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.evaluation import evaluate_model
from common.models import ModelConfig, build_model
from simulations.baselines import evaluate_popularity
from simulations.synthetic import SyntheticSpec, generate_federation


def test_local_training_learns_beyond_popularity():
    events = generate_federation(SyntheticSpec(num_merchants=1, num_users=400, num_items=150))
    data = build_user_item_data(events, ItemCatalog.from_keys(events.item_id))
    model = build_model(
        ModelConfig(embedding_dim=16),
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(0),
    )
    stats = train_local(
        model, data, TrainConfig(local_epochs=15, batch_users=32), rng=np.random.default_rng(0)
    )
    trained = evaluate_model(model, data, k=10, rng=np.random.default_rng(0))
    popular = evaluate_popularity(data, k=10, seed=0)
    assert stats.steps == 15 * int(np.ceil(data.num_users / 32))
    assert stats.users == data.num_users
    assert trained.means["ndcg@10"] > 1.5 * popular.means["ndcg@10"]
    assert trained.means["auc"] > popular.means["auc"]


def test_same_seed_same_model():
    events = generate_federation(SyntheticSpec(num_merchants=1, num_users=60, num_items=40))
    data = build_user_item_data(events, ItemCatalog.from_keys(events.item_id))

    def run():
        model = build_model(
            ModelConfig(embedding_dim=4),
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch.Generator().manual_seed(1),
        )
        train_local(model, data, TrainConfig(local_epochs=2), rng=np.random.default_rng(2))
        return model.item_embedding.weight.detach()

    torch.testing.assert_close(run(), run())


def test_local_steps_fix_the_work_per_round_whatever_the_merchant_size():
    from client.training.loop import sample_step_batches

    users = np.arange(10, dtype=np.int64)
    batches = list(sample_step_batches(users, batch_users=4, steps=7, rng=np.random.default_rng(0)))
    assert len(batches) == 7 and all(len(set(b.tolist())) == 4 for b in batches)
    small = list(
        sample_step_batches(users[:2], batch_users=4, steps=3, rng=np.random.default_rng(0))
    )
    assert [sorted(b.tolist()) for b in small] == [[0, 1]] * 3  # a batch is at most everyone
    assert (
        list(sample_step_batches(users[:0], batch_users=4, steps=3, rng=np.random.default_rng(0)))
        == []
    )
