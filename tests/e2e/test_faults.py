"""Faults on 127.0.0.1: a merchant dies mid-round and comes back; the coordinator dies and resumes.

A 4-round private run. During round 2 one merchant is killed (SIGKILL of all
its processes: nothing signs off) and restarted at once: round 2 completes
with the other two within the round timeout, and the merchant's epsilon goes
on from what its account had stored. After round 2 the coordinator is killed
and restarted with ``--resume``: the run continues after the last completed
round, and every merchant's ledger is held by the coordinator exactly once.
"""

from __future__ import annotations

import json
import time

import pytest

from common.privacy.accountant import PrivacyAccount
from common.privacy.accounting import epsilon_of
from common.privacy.ledger import Entry, read_ledger
from common.privacy.verify import verify_path
from tests.e2e.federation import Federation

pytestmark = pytest.mark.e2e

MERCHANTS = ["shop-a", "shop-b", "shop-c"]
TIMEOUT = 30  # round timeout (s): a dead merchant costs a round at most this


@pytest.fixture(scope="module")
def survived(tmp_path_factory):
    fed = Federation(root=tmp_path_factory.mktemp("faults"), merchants=MERCHANTS)
    try:
        fed.init()
        fed.start_coordinator()
        for name in MERCHANTS:
            fed.join(name)
        submitted = fed.run(
            "long", "--rounds", "4", "--epsilon", "3", "--model", "mf", "--min-nodes", "3",
            "--round-timeout", str(TIMEOUT), "--set", "min-train-nodes=2", "--detach",
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr + submitted.stdout
        fed.wait_for_round("long", 1, timeout=240)
        before = _account(fed, "shop-c")
        time.sleep(1.0)  # round 2 is under way
        fed.kill("shop-c")
        killed_at = time.monotonic()
        fed.join("shop-c")  # straight back: it waits until the coordinator lets it in
        fed.wait_for_round("long", 2, timeout=TIMEOUT + 60)
        round2_wait = time.monotonic() - killed_at
        fed.kill("coordinator")
        fed.start_coordinator("--resume")
        deadline = time.monotonic() + 400
        # The killed run's ServerApp may still record its own failure; wait for the resumed one.
        while fed.progress("long").get("resumed_from") != 2:
            assert time.monotonic() < deadline, fed.progress("long")
            time.sleep(0.5)
        while fed.progress("long").get("status") != "finished":
            assert time.monotonic() < deadline, fed.progress("long")
            assert fed.progress("long").get("status") != "failed", fed.progress("long")
            time.sleep(0.5)
        yield fed, before, round2_wait
    finally:
        fed.close()


def _account(fed, name):
    return PrivacyAccount.load(fed.state(name) / "privacy_account.json")


def test_the_round_completes_without_the_dead_merchant_within_the_timeout(survived):
    fed, _, round2_wait = survived
    history = json.loads((fed.coord / "runs" / "long" / "federation.json").read_text())
    rounds = {r["round"]: r for r in history["rounds"]}
    assert sorted(rounds) == [1, 2, 3, 4]
    assert sorted(rounds[2]["train"]) == ["shop-a", "shop-b"]
    assert rounds[2]["failures"] == ["shop-c: no reply within the round timeout"]
    assert rounds[2]["seconds"] <= TIMEOUT + 10 and round2_wait <= TIMEOUT + 30
    assert history["resumed_from"] == 2


def test_the_restarted_merchant_goes_on_from_its_stored_epsilon(survived):
    fed, before, _ = survived
    after = _account(fed, "shop-c")
    assert after.events[: len(before.events)] == before.events  # nothing forgotten
    assert len(after.events) > len(before.events)  # and it trained again after the restart
    entries = read_ledger(fed.state("shop-c") / "ledger.jsonl").entries
    spent = [e.body["epsilon_rdp"] for e in entries if e.kind == "commit"]
    assert spent == sorted(spent) and len(set(spent)) == len(spent)  # strictly increasing
    assert spent[-1] == pytest.approx(
        epsilon_of(after.history(), delta=after.plan.delta, accountant="rdp"), rel=1e-6
    )
    history = json.loads((fed.coord / "runs" / "long" / "federation.json").read_text())
    assert history["privacy"]["shop-c"]["dp-epsilon"] == pytest.approx(after.epsilon(), rel=1e-6)


def test_no_ledger_entry_is_lost_or_duplicated_across_the_coordinator_restart(survived):
    fed, _, _ = survived
    run_dir = fed.coord / "runs" / "long"
    verdict = verify_path(run_dir)
    assert verdict.ok, [p.render() for p in verdict.problems]
    federation = read_ledger(run_dir / "ledger" / "federation.jsonl").entries
    for name in MERCHANTS:
        own = [e.hash for e in read_ledger(fed.state(name) / "ledger.jsonl").entries]
        held = [
            Entry.from_json(e).hash
            for entry in federation
            if entry.kind == "merchant-entries" and entry.body["merchant"] == name
            for e in entry.body["entries"]
        ]
        assert held == own, name
    heads = [e.body["round"] for e in federation if e.kind == "round-head"]
    assert heads[:2] == [1, 2] and heads[-2:] == [3, 4]
    assert [e.kind for e in federation][-1] == "close"
