"""A merchant's lifetime on 127.0.0.1: three private runs on the same states, new events ingested
between them, one account composing them all, and a run past a lifetime budget refused.

After each run every merchant's lifetime epsilon (its account) equals Google's dp-accounting
over every DP release its ledger reserved, of every run, within 1%; the third run is refused
by the merchant whose lifetime budget it would pass, before it releases anything, with a
ledger entry; every ledger verifies across the runs.
"""

from __future__ import annotations

import json

import dp_accounting
import pytest
from dp_accounting import rdp

from common.data.catalog import ItemCatalog
from common.errors import ConfigError
from common.privacy.accountant import PrivacyAccount, planned_events
from common.privacy.accounting import RDP_ORDERS, epsilon_of
from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_path
from server.ops.coordinator import CoordinatorDir
from server.ops.submit import Submission, resolve_settings
from simulations.audit_report import write_report
from tests.e2e.federation import Federation, started

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MERCHANTS = ["shop-a", "shop-b", "shop-c"]
RUN = ("--epsilon", "4", "--min-nodes", "3", "--round-timeout", "120")  # DP EASE, one release


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    with started(tmp_path_factory.mktemp("lifetime"), MERCHANTS) as fed:
        yield fed


def _reserves(fed: Federation, name: str) -> list[dict]:
    entries = read_ledger(fed.state(name) / "ledger.jsonl").entries
    return [e.body for e in entries if e.kind == "reserve"]


def _by_dp_accounting(reserves: list[dict], delta: float) -> float:
    """Every release the ledger reserved, composed by dp-accounting's RDP accountant."""
    accountant = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    for body in reserves:
        event = dp_accounting.GaussianDpEvent(body["noise_multiplier"])
        if body["sample_rate"] < 1:
            event = dp_accounting.PoissonSampledDpEvent(body["sample_rate"], event)
        accountant.compose(event, int(body["steps"]))
    return float(accountant.get_epsilon(delta))


def _account(fed: Federation, name: str) -> PrivacyAccount:
    account = PrivacyAccount.load(fed.state(name) / "privacy_account.json")
    assert account is not None
    return account


def _ingest(fed: Federation, seed: int) -> None:
    """New events for each merchant: its own log replayed later, half of it by new users."""
    for name in MERCHANTS:
        rows = (fed.root / f"{name}.csv").read_text().splitlines()[1:]
        lines = ["user_id,item_id,timestamp"]
        for n, row in enumerate(rows):
            user, item, stamp = row.split(",")
            renamed = f"{user}-new-{seed}" if n % 2 else user  # a new user, or a returning one
            lines.append(f"{renamed},{item},{int(stamp) + seed * 10**8}")
        path = fed.root / f"{name}-new-{seed}.csv"
        path.write_text("\n".join(lines) + "\n")
        done = fed.fedrec(
            "merchant", "ingest", "--state", str(fed.state(name)), "--data", str(path)
        )
        assert done.returncode == 0, done.stderr + done.stdout
        assert f"{len(rows)} events read, {len(rows)} added (" in done.stdout, done.stdout
        assert "; 0 name items outside the federation catalog" in done.stdout, done.stdout


def _check_lifetime(fed: Federation, name: str, runs: list[str]) -> float:
    """``name``'s account holds ``runs`` and its lifetime epsilon equals dp-accounting's over
    every release its ledger reserved; the ledger verifies across the runs."""
    reserves = _reserves(fed, name)
    assert sorted({r["run"] for r in reserves}) == sorted(runs)
    account = _account(fed, name)
    assert [p.run for p in account.past] + [account.run] == runs
    lifetime = account.lifetime_epsilon()
    assert lifetime == pytest.approx(_by_dp_accounting(reserves, account.plan.delta), rel=0.01)
    assert reserves[-1]["epsilon_rdp"] == pytest.approx(lifetime, rel=1e-9)
    verdict = verify_path(fed.state(name))
    assert verdict.ok, [p.render() for p in verdict.problems]
    return lifetime


def test_three_runs_with_new_events_compose_into_one_account_and_the_third_is_refused(
    federation, tmp_path
):
    fed = federation
    first = fed.run("monday", *RUN)
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = {name: _check_lifetime(fed, name, ["monday"]) for name in MERCHANTS}
    users_before = _account(fed, "shop-a").plan.population
    # the run keeps its catalog, through which a later run's warm start matches items; a warm
    # start of another model is refused before anything is sent
    coordinator = CoordinatorDir(fed.coord)
    monday = coordinator.runs / "monday"
    assert ItemCatalog.load(monday / "catalog.json") == ItemCatalog.read(coordinator.catalog)
    with pytest.raises(ConfigError, match="trained another model .*model: 'ease' -> 'mf'"):
        resolve_settings(
            coordinator, Submission(name="x", settings={"model": "mf", "init-from": str(monday)})
        )

    _ingest(fed, seed=11)
    second = fed.run("tuesday", *RUN)
    assert second.returncode == 0, second.stdout + second.stderr
    after_second = {name: _check_lifetime(fed, name, ["monday", "tuesday"]) for name in MERCHANTS}
    for name in MERCHANTS:
        assert after_second[name] > after_first[name] * 1.2
    assert _account(fed, "shop-a").plan.population > users_before  # the new users count

    # shop-c's lifetime budget fits what it spent, not a third run of the same plan
    account = _account(fed, "shop-c")
    third_planned = epsilon_of(
        account.lifetime_history() + planned_events(account.plan),
        delta=account.plan.delta,
        accountant=account.plan.accountant,
    )
    budget = round((after_second["shop-c"] + third_planned) / 2, 3)
    assert after_second["shop-c"] < budget < third_planned
    (fed.state("shop-c") / "policy.json").write_text(
        json.dumps({"require-privacy": "user", "epsilon-max": budget})
    )
    _ingest(fed, seed=12)
    account_before = (fed.state("shop-c") / "privacy_account.json").read_text()
    third = fed.run("wednesday", *RUN, "--set", "min-train-nodes=2")
    said = third.stdout + third.stderr
    terminal = fed.tail("shop-c", chars=100_000)  # the merchant's own terminal says why
    assert (
        "wednesday item counts: refused, nothing released: Merchant shop-c: run 'wednesday' "
        "plans epsilon 4; composed with the 2 earlier run(s)" in terminal
    ), terminal
    assert f"lifetime budget epsilon-max={budget:g} (policy.json)" in terminal
    assert "the largest epsilon a run with these settings fits here is " in terminal
    assert "tuesday: item counts released with DP; epsilon 2.000 of 4 spent; lifetime" in terminal
    assert [r["run"] for r in _reserves(fed, "shop-c")] == ["monday"] * 2 + ["tuesday"] * 2
    assert (fed.state("shop-c") / "privacy_account.json").read_text() == account_before
    entries = read_ledger(fed.state("shop-c") / "ledger.jsonl").entries
    (refusal,) = [e.body for e in entries if e.kind == "refusal"]
    assert (refusal["run"], refusal["release"]) == ("wednesday", "item-counts")
    assert "lifetime budget" in refusal["reason"]
    assert verify_path(fed.state("shop-c")).ok
    assert third.returncode == 0, said  # the other two ran it: three runs in one account
    for name in ("shop-a", "shop-b"):
        _check_lifetime(fed, name, ["monday", "tuesday", "wednesday"])

    # the privacy officer's view of shop-c: every run, the lifetime after it, the refusal
    report = write_report(fed.state("shop-c"), tmp_path / "audit")
    runs = {r["run"]: r for r in report["merchants"]["shop-c"]["runs"]}
    assert list(runs) == ["monday", "tuesday", "wednesday"]
    assert runs["tuesday"]["lifetime_epsilon"] == pytest.approx(after_second["shop-c"], rel=1e-9)
    assert (
        runs["wednesday"]["releases"] == 0 and "lifetime budget" in runs["wednesday"]["refused"][0]
    )
