"""The pure comparison of a privacy account with its ledger's reservations (no Flower, no disk)."""

from __future__ import annotations

import copy

import pytest

from common.privacy.account_check import (
    account_disagreements,
    ledger_epsilon,
    ledger_releases,
)
from common.privacy.accountant import (
    EVENT_DP_SGD,
    EVENT_ITEM_COUNTS,
    PrivacyAccount,
    PrivacyPlan,
)
from common.privacy.accounting import PrivacyEvent
from common.privacy.ledger import ABORT, COMMIT, REFUSAL, RESERVE, Entry
from common.privacy.records import release_record

PLAN = PrivacyPlan(
    unit="user",
    accountant="rdp",
    delta=1e-5,
    target_epsilon=2.0,
    max_grad_norm=1.0,
    population=1000,
    sample_rate=0.05,
    steps_per_round=20,
    planned_rounds=3,
    noise_multiplier=1.1,
    count_noise_multiplier=8.0,
)
COUNTS = PrivacyEvent(noise_multiplier=8.0, sample_rate=1.0, steps=1)
STEP = PrivacyEvent(noise_multiplier=1.1, sample_rate=0.05, steps=20)


def _entry(seq: int, kind: str, body: dict) -> Entry:
    return Entry(seq=seq, prev="0" * 64, kind=kind, party="shop", at="t", body=body, sig="")


def _spend(rounds: int, *, run: str = "spring") -> tuple[PrivacyAccount, list[Entry]]:
    """The account and ledger of a merchant after its counts and ``rounds`` DP-SGD rounds."""
    account, entries = PrivacyAccount(plan=PLAN), [_entry(0, "genesis", {})]
    for server_round in range(rounds + 1):
        kind, event = (EVENT_ITEM_COUNTS, COUNTS) if server_round == 0 else (EVENT_DP_SGD, STEP)
        account.record(kind, server_round, event)
        body = release_record(
            account,
            run=run,
            server_round=server_round,
            merchant="shop",
            release=kind,
            event=event,
            budget=3.0,
            released=["counts"],
            kept_local=[],
            secagg=False,
            model="mf",
        )
        entries.append(_entry(len(entries), RESERVE, body))
        closing = COMMIT if server_round < rounds else ABORT  # the last one crashed
        entries.append(_entry(len(entries), closing, {**body, "reserve_seq": len(entries) - 1}))
    return account, entries


def test_reservations_are_read_exactly_and_commits_refusals_are_not_counted_twice() -> None:
    account, entries = _spend(2)
    entries.append(_entry(len(entries), REFUSAL, {**entries[-1].body, "reason": "budget"}))
    releases = ledger_releases(entries)
    assert [(r.seq, r.kind, r.round) for r in releases] == [
        (1, EVENT_ITEM_COUNTS, 0),
        (3, EVENT_DP_SGD, 1),
        (5, EVENT_DP_SGD, 2),  # aborted: still counted
    ]
    assert releases[2].event == STEP and releases[0].event == COUNTS
    assert ledger_epsilon(releases) == pytest.approx(account.epsilon(), rel=1e-12)
    assert ledger_epsilon([]) == 0.0


def test_an_account_that_matches_or_over_counts_agrees() -> None:
    account, entries = _spend(2)
    releases = ledger_releases(entries)
    assert account_disagreements(account, releases) == []
    account.record(EVENT_DP_SGD, 3, STEP)  # saved before a reservation that never came
    assert account_disagreements(account, releases) == []
    assert account_disagreements(None, []) == []  # nothing released yet: nothing to check


def test_a_missing_account_disagrees() -> None:
    _, entries = _spend(2)
    assert account_disagreements(None, ledger_releases(entries)) == [
        "the account is missing but the ledger holds 3 DP release(s)"
    ]


def test_a_dropped_event_and_the_lower_epsilon_are_both_named() -> None:
    account, entries = _spend(2)
    recorded = account.epsilon()
    edited = copy.deepcopy(account)
    del edited.events[1]
    problems = account_disagreements(edited, ledger_releases(entries))
    assert problems == [
        "1 of the ledger's 3 DP release(s) have no matching event in the account (2 event(s)): "
        "ledger entry 3 (dp-sgd, run 'spring', round 1: sigma=1.1, q=0.05, steps=20)",
        f"the account's epsilon {edited.epsilon():.4f} is below the {recorded:.4f} "
        "the ledger recorded",
    ]
    assert edited.epsilon() < recorded


@pytest.mark.parametrize(
    "changed",
    [
        PrivacyEvent(noise_multiplier=1.1, sample_rate=0.05, steps=19),  # fewer steps
        PrivacyEvent(noise_multiplier=1.2, sample_rate=0.05, steps=20),  # another sigma
        PrivacyEvent(noise_multiplier=1.1, sample_rate=0.04, steps=20),  # another q
    ],
)
def test_an_event_with_other_parameters_does_not_match(changed: PrivacyEvent) -> None:
    account, entries = _spend(2)
    account.events[2] = type(account.events[2])(kind=EVENT_DP_SGD, round=2, event=changed)
    problems = account_disagreements(account, ledger_releases(entries))
    assert problems[0].startswith("1 of the ledger's 3 DP release(s) have no matching event")
    assert "ledger entry 5 (dp-sgd, run 'spring', round 2" in problems[0]


def test_another_delta_is_named() -> None:
    account, entries = _spend(1)
    account.plan = PrivacyPlan(**{**PLAN.__dict__, "delta": 1e-6})
    problems = account_disagreements(account, ledger_releases(entries))
    assert problems[0] == (
        "the account's plan is delta=1e-06 (rdp) but the ledger reserved releases at "
        "delta=1e-05 (rdp)"
    )
