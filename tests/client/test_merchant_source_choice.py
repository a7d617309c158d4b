"""A private merchant holds out its users' last training items and chooses what it serves."""

import dataclasses

import numpy as np
import pytest

import client.training.private
import common.privacy.counts
from common.models.prior import ItemPrior
from common.privacy.config import PrivacyConfig
from common.source_choice import POPULARITY_WEIGHTS, hold_out_selection, shared_fingerprint
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401

PRIVACY = PLAN.privacy  # user-level DP with an item-count release: the merchant chooses


def test_the_model_trains_without_the_held_out_items_and_the_counts_see_all(
    tmp_path,
    data,  # noqa: F811
    monkeypatch,
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


def test_the_choice_is_measured_saved_and_names_its_model(tmp_path, data):  # noqa: F811
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


def test_without_source_choice_the_whole_log_is_released_and_nothing_is_chosen(tmp_path, data):  # noqa: F811
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
