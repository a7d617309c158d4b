import json

import pytest

from common.errors import ConfigError
from common.privacy.accountant import (
    EVENT_DP_SGD,
    PrivacyAccount,
    PrivacyBudgetExceeded,
    plan_privacy,
)
from common.privacy.accounting import PrivacyEvent, epsilon_of
from common.privacy.config import PrivacyConfig

CONFIG = PrivacyConfig(unit="user", target_epsilon=3.0, delta=1e-6, count_share=0.1)


def test_plan_spends_exactly_the_target_over_the_planned_rounds():
    plan = plan_privacy(CONFIG, population=5000, batch=500, local_epochs=1, rounds=4)
    assert plan.sample_rate == pytest.approx(0.1) and plan.steps_per_round == 10
    events = [
        PrivacyEvent(plan.count_noise_multiplier, 1.0, 1),
        PrivacyEvent(plan.noise_multiplier, plan.sample_rate, 40),
    ]
    assert epsilon_of(events, delta=1e-6, accountant="rdp") == pytest.approx(3.0, rel=2e-3)


def test_delta_must_be_below_one_over_the_users():
    with pytest.raises(ConfigError, match=r"target-delta=0.01 is not below 1/200 .*users at shop"):
        plan_privacy(
            PrivacyConfig(unit="user", target_epsilon=3.0, delta=0.01),
            population=200,
            batch=50,
            local_epochs=1,
            rounds=2,
            who="shop",
        )


def test_account_round_trips_and_refuses_past_its_budget(tmp_path):
    plan = plan_privacy(CONFIG, population=5000, batch=500, local_epochs=1, rounds=4)
    account = PrivacyAccount(plan=plan)
    step = PrivacyEvent(plan.noise_multiplier, plan.sample_rate, plan.steps_per_round)
    account.record(EVENT_DP_SGD, 1, step)
    account.save(tmp_path / "account.json")
    loaded = PrivacyAccount.load(tmp_path / "account.json")
    assert loaded == account and loaded.steps == plan.steps_per_round
    with pytest.raises(PrivacyBudgetExceeded, match="above the budget epsilon-max=0.5"):
        loaded.check_budget(step, budget=0.5, what="round 2")


def test_damaged_account_is_an_error_not_a_fresh_start(tmp_path):
    path = tmp_path / "account.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON.*refusing to train"):
        PrivacyAccount.load(path)
    path.write_text(json.dumps({"version": 1, "plan": {}, "events": []}))
    with pytest.raises(ConfigError, match="damaged"):
        PrivacyAccount.load(path)
