"""DP-SGD local training: every planned step is taken, empty samples included."""

import numpy as np
import torch

from client.training.private import private_population, train_private
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.models import ModelConfig, build_model
from common.privacy.accountant import PrivacyPlan
from simulations.synthetic import SyntheticSpec, generate_federation


def _setup(sample_rate):
    events = generate_federation(SyntheticSpec(num_merchants=1, num_users=40, num_items=20, seed=1))
    data = build_user_item_data(events, ItemCatalog.from_keys(events.item_id))
    model = build_model(
        ModelConfig(embedding_dim=4),
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(0),
    )
    population = len(private_population(data, "user"))
    plan = PrivacyPlan(
        unit="user",
        accountant="rdp",
        delta=1e-5,
        target_epsilon=1.0,
        max_grad_norm=0.5,
        population=population,
        sample_rate=sample_rate,
        steps_per_round=7,
        planned_rounds=1,
        noise_multiplier=1.0,
        count_noise_multiplier=0.0,
    )
    return data, model, plan


def test_empty_samples_still_take_a_noise_only_step():
    data, model, plan = _setup(sample_rate=1e-9)  # practically nobody is ever sampled
    before = model.item_embedding.weight.detach().clone()
    users_before = model.user_embedding.weight.detach().clone()
    stats = train_private(
        model,
        data,
        TrainConfig(),
        plan,
        rng=np.random.default_rng(0),
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.steps == 7 and stats.users == 0
    assert not torch.equal(model.item_embedding.weight, before)  # noise moved the items
    assert torch.equal(model.user_embedding.weight, users_before)  # no user was touched


def test_sampled_users_train_and_their_norms_are_reported():
    data, model, plan = _setup(sample_rate=0.5)
    stats = train_private(
        model,
        data,
        TrainConfig(),
        plan,
        rng=np.random.default_rng(0),
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.steps == 7 and stats.users > 0 and np.isfinite(stats.loss)
    assert 0.0 <= stats.clipped_fraction <= 1.0
