"""A merchant under user-level DP: cumulative accounting across rounds and restarts, budgets."""

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting import rdp

from client.merchant import Merchant
from client.state.store import MerchantStore
from common.config import RoundPlan, TrainConfig
from common.constants import MERCHANT_DATA_FILE, MERCHANT_USERS_FILE
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.models import ModelConfig, build_model
from common.models.prior import ItemPrior
from common.privacy.accountant import PrivacyBudgetExceeded
from common.privacy.accounting import RDP_ORDERS
from common.privacy.config import PrivacyConfig
from simulations.synthetic import SyntheticSpec, generate_federation

MODEL = ModelConfig(embedding_dim=4)
PLAN = RoundPlan(
    train=TrainConfig(batch_users=40, local_epochs=1, learning_rate=0.05),
    privacy=PrivacyConfig(unit="user", target_epsilon=2.0, delta=1e-5, max_grad_norm=0.5),
    num_rounds=4,
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
    return Merchant(MerchantStore(directory), MODEL, seed=0)  # a fresh object = a restart


def _global(num_items):
    model = build_model(MODEL, num_users=0, num_items=num_items, generator=torch.Generator())
    return {n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()}


def _independent_epsilon(plan, rounds, delta):
    """Google's dp-accounting over the same events: one count release, rounds x steps."""
    accountant = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    accountant.compose(dp_accounting.GaussianDpEvent(plan.count_noise_multiplier))
    step = dp_accounting.PoissonSampledDpEvent(
        plan.sample_rate, dp_accounting.GaussianDpEvent(plan.noise_multiplier)
    )
    accountant.compose(step, rounds * plan.steps_per_round)
    return accountant.get_epsilon(delta)


def test_epsilon_is_cumulative_across_rounds_and_a_restart(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    counts = merchant.release_item_counts(PLAN).counts
    assert counts.shape == (data.num_items,)
    prior = ItemPrior(counts=counts, trained=np.arange(data.num_items))
    shared, reports = _global(data.num_items), []
    for server_round in (1, 2):
        outcome = merchant.train(shared, PLAN, server_round=server_round, prior=prior)
        shared, reports = outcome.shared, [*reports, outcome.privacy]
    restarted = _merchant(tmp_path, data)  # new process: everything comes from disk
    for server_round in (3, 4):
        outcome = restarted.train(shared, PLAN, server_round=server_round, prior=prior)
        shared, reports = outcome.shared, [*reports, outcome.privacy]

    plan = restarted.account(PLAN).plan
    for rounds, reported in enumerate(reports, start=1):
        expected = _independent_epsilon(plan, rounds, PLAN.privacy.delta)
        assert reported.epsilon == pytest.approx(expected, rel=0.01)
        assert reported.steps == rounds * plan.steps_per_round
    assert reports[-1].epsilon == pytest.approx(2.0, rel=0.01)  # the plan spends the target
    assert reports[0].epsilon < reports[1].epsilon < reports[2].epsilon < reports[3].epsilon
    assert reports[-1].unit == "user" and reports[-1].accountant == "rdp"


def test_a_merchant_at_its_budget_refuses_before_training(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    merchant.release_item_counts(PLAN)
    shared = _global(data.num_items)
    first = merchant.train(shared, PLAN, server_round=1)
    merchant.store.write_policy(epsilon_max=first.privacy.epsilon * 1.01)  # room for nothing more
    local_before = merchant.store.load_local()["user_embedding.weight"].clone()
    account_before = merchant.store.privacy_account_path.read_text()
    with pytest.raises(PrivacyBudgetExceeded, match="above the budget"):
        merchant.train(first.shared, PLAN, server_round=2)
    assert merchant.store.privacy_account_path.read_text() == account_before  # nothing spent
    assert torch.equal(merchant.store.load_local()["user_embedding.weight"], local_before)


def test_a_changed_plan_is_refused(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    merchant.release_item_counts(PLAN)
    changed = RoundPlan(train=PLAN.train, privacy=PLAN.privacy, num_rounds=8)
    with pytest.raises(Exception, match="privacy plan changed.*rounds"):
        merchant.train(_global(data.num_items), changed, server_round=1)


def test_counts_are_released_once(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    merchant.release_item_counts(PLAN)
    with pytest.raises(Exception, match="already released its item counts"):
        merchant.release_item_counts(PLAN)


def test_untrained_items_get_no_gradient_and_no_noise(tmp_path, data):
    merchant = _merchant(tmp_path, data)
    merchant.release_item_counts(PLAN)
    shared = _global(data.num_items)
    trained = np.arange(0, data.num_items, 2)  # every other item
    prior = ItemPrior(counts=np.zeros(data.num_items), trained=trained)
    outcome = merchant.train(shared, PLAN, server_round=1, prior=prior)
    untrained = np.setdiff1d(np.arange(data.num_items), trained)
    for name in ("item_embedding.weight", "item_bias.weight"):
        np.testing.assert_array_equal(outcome.shared[name][untrained], shared[name][untrained])
        assert not np.allclose(outcome.shared[name][trained], shared[name][trained])
