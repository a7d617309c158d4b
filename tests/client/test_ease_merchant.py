"""A merchant of a statistics model (model=ease): one DP co-occurrence release, accounted."""

import dataclasses

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import rdp

from client.merchant import Merchant
from client.state.store import MerchantStore
from common.config import RoundPlan, TrainConfig
from common.constants import MERCHANT_DATA_FILE, MERCHANT_USERS_FILE
from common.errors import ConfigError
from common.models import ModelConfig, build_model
from common.models.prior import ItemPrior
from common.privacy.accountant import EVENT_ITEM_GRAM, CountsOnly, PrivacyBudgetExceeded
from common.privacy.accounting import RDP_ORDERS
from common.privacy.config import PrivacyConfig
from common.privacy.counts import most_counted
from common.privacy.records import GRAM_SAMPLING
from tests.client.test_private_merchant import data  # noqa: F401

MODEL = ModelConfig(kind="ease", ease_items=20)
PLAN = RoundPlan(
    train=TrainConfig(batch_users=40),
    privacy=PrivacyConfig(unit="user", target_epsilon=2.0, delta=1e-5, count_share=0.3),
    num_rounds=1,
)


def _merchant(tmp_path, data):  # noqa: F811
    directory = tmp_path / "shop"
    if not (directory / MERCHANT_DATA_FILE).exists():
        data.save(directory, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
    return Merchant(MerchantStore(directory), MODEL, seed=0)


def _global_with(items, num_items):
    model = build_model(MODEL, num_users=0, num_items=num_items, generator=torch.Generator())
    shared = {n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()}
    shared["items"] = items.astype(np.float32)  # as the coordinator sets them from the prior
    return shared


def _released(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    counts = merchant.release_item_counts(PLAN).counts
    prior = ItemPrior(counts=counts, trained=most_counted(counts, MODEL.ease_items))
    shared = _global_with(prior.trained, data.num_items)
    return merchant, prior, shared, merchant.train(shared, PLAN, server_round=1, prior=prior)


def test_the_release_is_one_gaussian_event_accounted_as_dp_accounting_does(
    tmp_path,
    data,  # noqa: F811
):
    merchant, prior, shared, outcome = _released(tmp_path, data)
    plan = merchant.account(PLAN).plan
    assert (plan.sample_rate, plan.steps_per_round) == (1.0, 1)
    independent = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    independent.compose(dp_accounting.GaussianDpEvent(plan.count_noise_multiplier))
    independent.compose(dp_accounting.GaussianDpEvent(plan.noise_multiplier))
    expected = independent.get_epsilon(PLAN.privacy.delta)
    assert outcome.privacy.epsilon == pytest.approx(expected, rel=0.01)
    assert outcome.privacy.epsilon == pytest.approx(2.0, rel=0.01)  # the plan spends the target

    gram = outcome.shared["gram"]
    assert gram.shape == (20, 20) and np.array_equal(gram, gram.T)
    assert np.array_equal(outcome.shared["items"], shared["items"])  # the items do not move
    reserve = [e.body for e in merchant.ledger.ledger.entries if e.body.get("release")][-1]
    assert reserve["release"] == EVENT_ITEM_GRAM
    assert reserve["sampling"] == GRAM_SAMPLING
    assert reserve["noise_multiplier"] == pytest.approx(plan.noise_multiplier)
    assert reserve["max_grad_norm"] == 1.0  # the L2 bound of one user's contribution


def test_a_second_release_would_exceed_the_budget_and_is_refused(
    tmp_path,
    data,  # noqa: F811
):
    merchant, prior, shared, _ = _released(tmp_path, data)
    with pytest.raises(PrivacyBudgetExceeded):
        merchant.train(shared, PLAN, server_round=2, prior=prior)


def test_items_other_than_the_priors_are_refused_before_any_release(
    tmp_path,
    data,  # noqa: F811
):
    merchant = _merchant(tmp_path, data)
    counts = merchant.release_item_counts(PLAN).counts
    prior = ItemPrior(counts=counts, trained=most_counted(counts, MODEL.ease_items))
    wrong = _global_with(np.arange(MODEL.ease_items), data.num_items)
    if np.array_equal(prior.trained, np.arange(MODEL.ease_items)):
        wrong["items"][0] = data.num_items - 1
    spent = merchant.account(PLAN).epsilon()
    with pytest.raises(ConfigError, match="not the item prior"):
        merchant.train(wrong, PLAN, server_round=1, prior=prior)
    with pytest.raises(ConfigError, match="no item prior"):
        merchant.train(wrong, PLAN, server_round=1, prior=None)
    assert merchant.account(PLAN).epsilon() == spent  # nothing more was spent


def test_a_merchant_below_count_only_below_spends_all_on_counts_and_refuses_training(
    tmp_path,
    data,  # noqa: F811
):
    small = dataclasses.replace(
        PLAN, privacy=dataclasses.replace(PLAN.privacy, count_only_below=10_000.0)
    )  # 200 users x epsilon 2 = 400 < 10,000
    merchant = _merchant(tmp_path, data)
    release = merchant.release_item_counts(small)
    plan = merchant.account(small).plan
    assert not plan.trains and plan.noise_multiplier == 0.0
    independent = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    independent.compose(dp_accounting.GaussianDpEvent(plan.count_noise_multiplier))
    assert release.privacy.epsilon == pytest.approx(independent.get_epsilon(1e-5), rel=0.01)
    assert release.privacy.epsilon == pytest.approx(2.0, rel=0.01)  # the whole budget
    prior = ItemPrior(counts=release.counts, trained=most_counted(release.counts, 20))
    with pytest.raises(CountsOnly, match="count-only-below"):
        merchant.train(
            _global_with(prior.trained, data.num_items), small, server_round=1, prior=prior
        )
    refusal = merchant.ledger.ledger.entries[-1]
    assert refusal.kind == "refusal" and "count-only-below" in refusal.body["reason"]
    assert merchant.account(small).epsilon() == pytest.approx(release.privacy.epsilon)
