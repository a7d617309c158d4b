"""A merchant's ledger outranks its account file; one account composes every run of a state."""

from __future__ import annotations

import dataclasses
import json
import re

import dp_accounting
import pytest
from dp_accounting import rdp

from common.privacy.accountant import (
    AccountDisagrees,
    LifetimeBudgetExceeded,
    PrivacyAccount,
    PrivacyRefused,
    planned_events,
)
from common.privacy.accounting import RDP_ORDERS
from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_merchant
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401


def _spent(tmp_path, data, *, run="spring"):  # noqa: F811
    """A merchant that released its counts and trained round 1 of ``run``; its epsilon."""
    merchant = _merchant(tmp_path, data)
    release = merchant.release_item_counts(PLAN, run=run)
    merchant.commit(release.reservation, {"counts": release.counts}, metrics={})
    outcome = merchant.train(_global(data.num_items), PLAN, server_round=1, run=run)
    merchant.commit(outcome.reservation, outcome.shared, metrics={})
    return merchant, outcome.privacy.epsilon


def _kinds(merchant):
    return [e.kind for e in read_ledger(merchant.ledger.path).entries]


def test_a_deleted_account_refuses_training_and_counts_naming_the_file_and_the_spent_epsilon(
    tmp_path,
    data,  # noqa: F811
):
    merchant, epsilon = _spent(tmp_path, data)
    path = merchant.store.privacy_account_path
    path.unlink()

    restarted = _merchant(tmp_path, data)
    with pytest.raises(AccountDisagrees) as refused:
        restarted.train(_global(data.num_items), PLAN, server_round=2, run="spring")
    message = str(refused.value)
    assert str(path) in message and "the account is missing" in message
    assert "2 DP release(s)" in message
    assert f"epsilon {epsilon:.4f} already spent" in message
    assert "Restore privacy_account.json from a backup" in message
    with pytest.raises(AccountDisagrees, match="the account is missing"):
        restarted.release_item_counts(PLAN, run="spring")
    assert not path.exists()  # no fresh account (epsilon 0) was made
    entries = read_ledger(restarted.ledger.path).entries
    assert [e.kind for e in entries[-2:]] == ["refusal", "refusal"]
    assert (entries[-2].body["round"], entries[-2].body["release"]) == (2, "dp-sgd")
    assert (entries[-1].body["round"], entries[-1].body["release"]) == (0, "item-counts")
    assert _kinds(restarted).count("reserve") == 2  # nothing more was reserved
    assert verify_merchant(restarted.ledger.path).ok


def test_an_account_with_an_event_dropped_is_refused(tmp_path, data):  # noqa: F811
    merchant, epsilon = _spent(tmp_path, data)
    path = merchant.store.privacy_account_path
    payload = json.loads(path.read_text())
    assert [e["kind"] for e in payload["events"]] == ["item-counts", "dp-sgd"]
    payload["events"] = payload["events"][:1]  # forget round 1
    path.write_text(json.dumps(payload))

    with pytest.raises(AccountDisagrees) as refused:
        _merchant(tmp_path, data).train(_global(data.num_items), PLAN, server_round=2, run="spring")
    message = str(refused.value)
    assert "1 of the ledger's 2 DP release(s) have no matching event" in message
    assert "(dp-sgd, run 'spring', round 1" in message
    assert f"below the {epsilon:.4f} the ledger recorded" in message


def test_an_account_with_fewer_steps_is_refused_and_names_the_lower_epsilon(
    tmp_path,
    data,  # noqa: F811
):
    merchant, epsilon = _spent(tmp_path, data)
    path = merchant.store.privacy_account_path
    account = PrivacyAccount.load(path)
    assert account is not None
    steps = account.plan.steps_per_round
    payload = json.loads(path.read_text())
    payload["events"][1]["steps"] = 1  # was steps_per_round
    path.write_text(json.dumps(payload))
    lowered = PrivacyAccount.load(path)
    assert lowered is not None and lowered.epsilon() < epsilon

    with pytest.raises(AccountDisagrees) as refused:
        _merchant(tmp_path, data).release_item_counts(PLAN, run="spring")
    message = str(refused.value)
    assert f"steps={steps})" in message
    assert f"the account's epsilon {lowered.epsilon():.4f} is below the {epsilon:.4f}" in message


def test_an_untouched_account_trains_on_after_a_restart(tmp_path, data):  # noqa: F811
    _, epsilon = _spent(tmp_path, data)
    restarted = _merchant(tmp_path, data)  # a resume of the same run: new process, same name
    outcome = restarted.train(_global(data.num_items), PLAN, server_round=2, run="spring")
    assert outcome.privacy is not None and outcome.privacy.epsilon > epsilon
    assert outcome.privacy.steps == 2 * restarted.account(PLAN).plan.steps_per_round
    assert "refusal" not in _kinds(restarted)


def test_a_crash_after_saving_the_account_over_counts_and_is_allowed(tmp_path, data):  # noqa: F811
    merchant, _ = _spent(tmp_path, data)
    account = merchant.account(PLAN)
    account.record("dp-sgd", 2, account.events[-1].event)  # saved, but never reserved
    account.save(merchant.store.privacy_account_path)
    outcome = _merchant(tmp_path, data).train(
        _global(data.num_items), PLAN, server_round=2, run="spring"
    )
    assert outcome.privacy is not None
    assert outcome.privacy.steps == 3 * account.plan.steps_per_round


def _lifetime_by_dp_accounting(account, delta):
    """Google's dp-accounting RDP over every event of every run, in order."""
    accountant = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    for event in account.lifetime_history():
        gaussian = dp_accounting.GaussianDpEvent(event.noise_multiplier)
        if event.sample_rate < 1:
            gaussian = dp_accounting.PoissonSampledDpEvent(event.sample_rate, gaussian)
        accountant.compose(gaussian, event.steps)
    return accountant.get_epsilon(delta)


def test_a_second_run_on_used_state_composes_with_the_first_into_one_lifetime_account(
    tmp_path,
    data,  # noqa: F811
):
    merchant, first = _spent(tmp_path, data)
    other = _merchant(tmp_path, data)  # a new process, a new run
    release = other.release_item_counts(PLAN, run="summer")
    other.commit(release.reservation, {"counts": release.counts}, metrics={})
    outcome = other.train(_global(data.num_items), PLAN, server_round=1, run="summer")
    other.commit(outcome.reservation, outcome.shared, metrics={})

    account = other.account(PLAN)
    assert account.run == "summer" and [p.run for p in account.past] == ["spring"]
    assert [s.kind for s in account.past[0].events] == ["item-counts", "dp-sgd"]
    assert outcome.privacy is not None
    assert outcome.privacy.epsilon == pytest.approx(first, rel=1e-9)  # the run's own epsilon
    lifetime = account.lifetime_epsilon()
    assert lifetime > 1.2 * first
    assert lifetime == pytest.approx(
        _lifetime_by_dp_accounting(account, PLAN.privacy.delta), rel=0.01
    )
    entries = read_ledger(other.ledger.path).entries
    reserves = [e.body for e in entries if e.kind == "reserve"]
    assert [r["run"] for r in reserves] == ["spring"] * 2 + ["summer"] * 2
    assert reserves[-1]["epsilon_rdp"] == pytest.approx(lifetime, rel=1e-9)
    assert reserves[-1]["run_epsilon"] == pytest.approx(first, rel=1e-9)
    assert reserves[-1]["runs_composed"] == 2
    assert verify_merchant(other.ledger.path).ok  # the chain recomputes across both runs
    restarted = _merchant(tmp_path, data)  # the account survives a restart as it was
    assert restarted.account(PLAN).lifetime_epsilon() == pytest.approx(lifetime, rel=1e-12)


def test_a_run_above_the_lifetime_budget_is_refused_before_any_release_and_ledgered(
    tmp_path,
    data,  # noqa: F811
):
    merchant, first = _spent(tmp_path, data)
    merchant.store.write_policy(epsilon_max=1.2 * first)
    account_before = merchant.store.privacy_account_path.read_text()
    other = _merchant(tmp_path, data)
    with pytest.raises(LifetimeBudgetExceeded) as refused:
        other.release_item_counts(PLAN, run="summer")
    message = str(refused.value)
    assert "run 'summer' plans epsilon 2" in message and "1 earlier run(s)" in message
    assert f"lifetime epsilon {first:.4f})" in message
    assert f"lifetime budget epsilon-max={1.2 * first:g}" in message
    assert merchant.store.privacy_account_path.read_text() == account_before  # nothing spent
    entries = read_ledger(other.ledger.path).entries
    refusal = entries[-1]
    assert refusal.kind == "refusal"
    assert (refusal.body["run"], refusal.body["release"]) == ("summer", "item-counts")
    assert [e.body["run"] for e in entries if e.kind == "reserve"] == ["spring", "spring"]
    assert verify_merchant(other.ledger.path).ok

    # The refusal names the largest epsilon that fits what the lifetime budget leaves: sigma
    # calibrated against it, a run at that epsilon plans within the budget, a little more not.
    fits = re.search(r"fits here is ([0-9.]+) \(fedrec run --epsilon \1\)", message)
    assert fits is not None, message
    largest = float(fits.group(1))
    assert 0 < largest < PLAN.privacy.target_epsilon

    def at(epsilon):
        return dataclasses.replace(
            PLAN, privacy=dataclasses.replace(PLAN.privacy, target_epsilon=epsilon)
        )

    with pytest.raises(LifetimeBudgetExceeded):
        _merchant(tmp_path, data).release_item_counts(at(largest + 0.002), run="summer")
    release = _merchant(tmp_path, data).release_item_counts(at(largest), run="summer")
    assert release.reservation is not None
    account = _merchant(tmp_path, data).account(at(largest))
    planned = account.lifetime_epsilon(planned_events(account.plan)[len(account.events) :])
    assert 0.99 * 1.2 * first < planned <= 1.2 * first * (1 + 1e-9)  # the budget, nearly all


def test_a_run_at_another_delta_cannot_join_the_lifetime_account(tmp_path, data):  # noqa: F811
    _spent(tmp_path, data)
    other_delta = dataclasses.replace(PLAN, privacy=dataclasses.replace(PLAN.privacy, delta=1e-6))
    with pytest.raises(PrivacyRefused, match="composes its runs at privacy-unit=user, delta=1e-05"):
        _merchant(tmp_path, data).release_item_counts(other_delta, run="summer")


def test_a_run_that_spent_nothing_does_not_bind_the_next_runs_delta(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    merchant.privacy.account(PLAN, run="spring")  # planned, then nothing released
    other_delta = dataclasses.replace(PLAN, privacy=dataclasses.replace(PLAN.privacy, delta=1e-6))
    release = _merchant(tmp_path, data).release_item_counts(other_delta, run="summer")
    account = _merchant(tmp_path, data).account(other_delta)
    assert account.run == "summer" and account.past == [] and account.plan.delta == 1e-6
    assert release.privacy.epsilon == pytest.approx(account.lifetime_epsilon())
