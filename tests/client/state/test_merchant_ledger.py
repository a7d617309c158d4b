"""A merchant's ledger: reserve before, commit when sent, refusals and crashes on the record."""

from __future__ import annotations

import pytest

import client.training.private
from common.privacy.accountant import PrivacyAccount, PrivacyBudgetExceeded
from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_merchant
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401

# Every field a privacy officer needs, on every committed DP release.
RELEASE_FIELDS = {
    "run",
    "round",
    "merchant",
    "unit",
    "adjacency",
    "sampling",
    "noise_multiplier",
    "max_grad_norm",
    "sample_rate",
    "steps",
    "delta",
    "epsilon_rdp",
    "epsilon_prv",
    "accountant",
    "versions",
    "epsilon_max",
    "epsilon_remaining",
    "released",
    "kept_local",
    "secagg",
    "update_sha256",
    "non_dp_metrics",
}


def test_a_sent_round_is_reserved_then_committed_with_every_field(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    merchant.release_item_counts(PLAN, run="r1")
    outcome = merchant.train(_global(data.num_items), PLAN, server_round=1, run="r1")
    assert outcome.reservation is not None
    commit = merchant.commit(outcome.reservation, outcome.shared, metrics={"train-seconds": 1.0})
    body = commit.body
    assert set(body) >= RELEASE_FIELDS
    assert (body["run"], body["round"], body["merchant"], body["unit"]) == ("r1", 1, "shop", "user")
    assert body["released"] == ["global_bias.bias", "item_bias.weight", "item_embedding.weight"]
    assert body["kept_local"] == ["user_bias.weight", "user_embedding.weight"]
    assert body["secagg"] is False and body["non_dp_metrics"] == {"train-seconds": 1.0}
    account = PrivacyAccount.load(merchant.store.privacy_account_path)
    assert account is not None
    assert body["epsilon_rdp"] == pytest.approx(account.epsilon())
    assert body["epsilon_remaining"] == pytest.approx(body["epsilon_max"] - body["epsilon_rdp"])
    assert body["versions"]["opacus"] and body["versions"]["torch"].startswith("2.13")
    assert verify_merchant(merchant.ledger.path).ok


def test_a_refused_round_leaves_an_explicit_refusal(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    merchant.release_item_counts(PLAN)
    first = merchant.train(_global(data.num_items), PLAN, server_round=1)
    merchant.store.write_policy(epsilon_max=first.privacy.epsilon * 1.01)
    with pytest.raises(PrivacyBudgetExceeded):
        merchant.train(first.shared, PLAN, server_round=2)
    refusal = read_ledger(merchant.ledger.path).entries[-1]
    assert refusal.kind == "refusal" and refusal.body["round"] == 2
    assert "above the budget" in refusal.body["reason"]
    assert verify_merchant(merchant.ledger.path).ok


def test_a_crash_mid_round_verifies_shows_the_round_incomplete_then_aborted(
    tmp_path,
    data,  # noqa: F811
    monkeypatch,
):
    merchant = _merchant(tmp_path, data)
    release = merchant.release_item_counts(PLAN)
    merchant.commit(release.reservation, {"counts": release.counts}, metrics={})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while training")

    monkeypatch.setattr(client.training.private, "train_private", killed)
    with pytest.raises(KeyboardInterrupt):
        merchant.train(_global(data.num_items), PLAN, server_round=1)
    verdict = verify_merchant(merchant.ledger.path)
    assert verdict.ok
    assert len(verdict.notes) == 1 and "round 1 (dp-sgd)" in verdict.notes[0]
    assert "INCOMPLETE" in verdict.notes[0]
    monkeypatch.undo()

    restarted = _merchant(tmp_path, data)  # a new process: the dangling reservation is closed
    restarted.train(_global(data.num_items), PLAN, server_round=2)
    entries = read_ledger(restarted.ledger.path).entries
    abort = next(e for e in entries if e.kind == "abort")
    assert abort.body["round"] == 1 and entries[abort.body["reserve_seq"]].kind == "reserve"
    verdict = verify_merchant(restarted.ledger.path)
    assert verdict.ok
    # The crashed round's epsilon is still counted: 2 DP-SGD events in the account.
    account = PrivacyAccount.load(restarted.store.privacy_account_path)
    assert account is not None and [e.round for e in account.events] == [0, 1, 2]
