"""A private merchant holds out its users' last training items and chooses what it serves."""

import dataclasses

import numpy as np
import pytest
import torch

import client.training.private
import common.privacy.counts
from client.merchant import Merchant
from client.state.store import MerchantStore
from common.config import RoundPlan, TrainConfig
from common.constants import MERCHANT_DATA_FILE, MERCHANT_USERS_FILE
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.models import ModelConfig, build_model
from common.models.prior import ItemPrior
from common.privacy.config import PrivacyConfig
from common.source_choice import POPULARITY_WEIGHTS, hold_out_selection, shared_fingerprint
from simulations.synthetic import SyntheticSpec, generate_federation

MODEL = ModelConfig(embedding_dim=4)
PRIVACY = PrivacyConfig(unit="user", target_epsilon=2.0, delta=1e-5, max_grad_norm=0.5)
PLAN = RoundPlan(
    train=TrainConfig(batch_users=40, local_epochs=1, learning_rate=0.05),
    privacy=PRIVACY,
    num_rounds=2,
)


@pytest.fixture(scope="module")
def data():
    events = generate_federation(
        SyntheticSpec(num_merchants=1, num_users=200, num_items=50, seed=3)
    )
    return build_user_item_data(events, ItemCatalog.from_keys(events.item_id))


def _merchant(tmp_path, data):
    directory = tmp_path / "shop"
    if not (directory / MERCHANT_DATA_FILE).exists():
        data.save(directory, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
    return Merchant(MerchantStore(directory), MODEL, seed=0)


def _global(num_items):
    model = build_model(MODEL, num_users=0, num_items=num_items, generator=torch.Generator())
    return {n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()}


def test_the_model_trains_without_the_held_out_items_and_the_counts_see_all(
    tmp_path, data, monkeypatch
):
    merchant = _merchant(tmp_path, data)
    held = hold_out_selection(data)
    assert held.num_held_out > 100
    seen = []
    real_counts = common.privacy.counts.noisy_item_counts
    real_train = client.training.private.train_private

    def counts_spy(released, **kwargs):
        seen.append(("counts", released.num_train))
        return real_counts(released, **kwargs)

    def train_spy(model, released, *args, **kwargs):
        seen.append(("dp-sgd", released.num_train))
        return real_train(model, released, *args, **kwargs)

    monkeypatch.setattr(common.privacy.counts, "noisy_item_counts", counts_spy)
    monkeypatch.setattr(client.training.private, "train_private", train_spy)
    counts = merchant.release_item_counts(PLAN).counts
    prior = ItemPrior(counts=counts, trained=np.arange(data.num_items))
    merchant.train(_global(data.num_items), PLAN, server_round=1, prior=prior)
    assert seen == [("counts", data.num_train), ("dp-sgd", held.train.num_train)]
    assert held.train.num_train == data.num_train - held.num_held_out
    # The population (users with training data) is the data's: q is unchanged.
    assert merchant.account(PLAN).plan.sample_rate == pytest.approx(40 / data.num_users)


def test_the_choice_is_measured_saved_and_names_its_model(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    counts = merchant.release_item_counts(PLAN).counts
    prior = ItemPrior(counts=counts, trained=np.arange(data.num_items))
    shared = merchant.train(_global(data.num_items), PLAN, server_round=1, prior=prior).shared
    merchant.evaluate(shared, k=10, server_round=1, prior=prior, privacy=PRIVACY)
    choice = merchant.choose_source(
        shared, k=10, prior=prior, privacy=PRIVACY, run="r", server_round=1
    )
    assert choice is not None
    assert choice.held_out == hold_out_selection(data).num_held_out
    assert [w for w, _ in choice.ndcg] == sorted(POPULARITY_WEIGHTS)
    assert all(0.0 <= v <= 1.0 for _, v in choice.ndcg)
    assert choice.model == shared_fingerprint(shared)
    assert (choice.run, choice.server_round) == ("r", 1)
    assert choice.reason().startswith("serves ")
    assert merchant.store.load_source_choice() == choice  # kept at the merchant


def test_without_source_choice_the_whole_log_is_released_and_nothing_is_chosen(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    off = dataclasses.replace(PRIVACY, source_choice=False)
    assert merchant.training_data(off) is merchant.data
    no_counts = dataclasses.replace(PRIVACY, count_share=0.0)  # no popularity to compare with
    assert not no_counts.chooses_source
    assert not dataclasses.replace(PRIVACY, unit="interaction").chooses_source
    assert merchant.training_data(no_counts) is merchant.data
    assert not PrivacyConfig().chooses_source  # privacy off
    prior = ItemPrior(counts=np.ones(data.num_items), trained=np.arange(data.num_items))
    shared = _global(data.num_items)
    assert merchant.choose_source(shared, k=10, prior=prior, privacy=off) is None
    assert merchant.choose_source(shared, k=10, prior=None, privacy=PRIVACY) is None
    assert merchant.store.load_source_choice() is None
