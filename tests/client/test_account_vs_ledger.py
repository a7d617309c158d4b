"""A merchant's ledger outranks its account file; a used state refuses a second private run."""

from __future__ import annotations

import json

import pytest

from common.privacy.accountant import AccountDisagrees, PrivacyAccount, StateAlreadyUsed
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


def test_a_second_run_on_used_state_is_refused_before_any_release_and_ledgered(
    tmp_path,
    data,  # noqa: F811
):
    merchant, epsilon = _spent(tmp_path, data)
    account_before = merchant.store.privacy_account_path.read_text()

    other = _merchant(tmp_path, data)
    with pytest.raises(StateAlreadyUsed) as refused:
        other.release_item_counts(PLAN, run="summer")
    assert str(refused.value) == (
        f"Merchant shop: this state already spent epsilon {epsilon:.4f} on run 'spring' "
        "(one private training per state until lifetime accounts land); refusing run "
        "'summer' before any release. Use a fresh --state for a new private run."
    )
    with pytest.raises(StateAlreadyUsed, match="on run 'spring'"):
        other.train(_global(data.num_items), PLAN, server_round=1, run="summer")
    assert merchant.store.privacy_account_path.read_text() == account_before  # nothing spent
    entries = read_ledger(other.ledger.path).entries
    refusals = [e for e in entries if e.kind == "refusal"]
    assert [(r.body["run"], r.body["release"]) for r in refusals] == [
        ("summer", "item-counts"),
        ("summer", "dp-sgd"),
    ]
    assert "already spent epsilon" in refusals[0].body["reason"]
    assert [e.body["run"] for e in entries if e.kind == "reserve"] == ["spring", "spring"]
    assert verify_merchant(other.ledger.path).ok

    resumed = _merchant(tmp_path, data).train(  # the same run still goes on
        _global(data.num_items), PLAN, server_round=2, run="spring"
    )
    assert resumed.privacy is not None and resumed.privacy.epsilon > epsilon
