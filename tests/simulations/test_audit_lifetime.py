"""`fedrec audit report` over a merchant's lifetime: every run, its epsilon, the lifetime
epsilon over time, the lifetime budget left and the run refused by it."""

from __future__ import annotations

import json

import pytest

from common.privacy.accountant import LifetimeBudgetExceeded
from simulations.audit_plots import budget_bars, epsilon_series, lifetime_series
from simulations.audit_statement import statement
from simulations.cli import main
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401

BUDGET = 10.0


def _run(merchant, num_items, run):
    release = merchant.release_item_counts(PLAN, run=run)
    merchant.commit(release.reservation, {"counts": release.counts}, metrics={})
    outcome = merchant.train(_global(num_items), PLAN, server_round=1, run=run)
    merchant.commit(outcome.reservation, outcome.shared, metrics={})
    return outcome.privacy.epsilon


@pytest.fixture
def lived(tmp_path, data):  # noqa: F811
    """Two runs spent (spring, summer); autumn refused by the lifetime budget."""
    first = _merchant(tmp_path, data)
    first.store.write_policy(epsilon_max=BUDGET)
    spring = _run(first, data.num_items, "spring")
    summer = _run(_merchant(tmp_path, data), data.num_items, "summer")  # a new process
    lifetime = _merchant(tmp_path, data).account(PLAN).lifetime_epsilon()
    last = _merchant(tmp_path, data)
    last.store.write_policy(epsilon_max=lifetime * 1.1)
    with pytest.raises(LifetimeBudgetExceeded):
        last.release_item_counts(PLAN, run="autumn")
    return last.store.directory, spring, summer, lifetime


def test_the_report_shows_every_run_and_the_lifetime_epsilon(lived, tmp_path, capsys):
    directory, spring, summer, lifetime = lived
    out = tmp_path / "audit"
    assert main(["audit", "report", str(directory), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Runs per merchant" in printed and "autumn" in printed

    report = json.loads((out / "report.json").read_text())
    (merchant,) = report["merchants"].values()
    runs = {run["run"]: run for run in merchant["runs"]}
    assert list(runs) == ["spring", "summer", "autumn"]
    assert runs["spring"]["releases"] == runs["summer"]["releases"] == 2
    assert runs["spring"]["run_epsilon"] == pytest.approx(spring, rel=1e-9)
    assert runs["spring"]["lifetime_epsilon"] == pytest.approx(spring, rel=1e-9)
    assert runs["summer"]["run_epsilon"] == pytest.approx(summer, rel=1e-9)
    assert runs["summer"]["lifetime_epsilon"] == pytest.approx(lifetime, rel=1e-9)
    assert spring < lifetime < spring + summer  # composed, tighter than adding
    # the budget each release was checked against, and what it left then
    assert runs["summer"]["lifetime_epsilon_max"] == BUDGET
    assert runs["summer"]["lifetime_epsilon_remaining"] == pytest.approx(BUDGET - lifetime)
    assert runs["autumn"]["releases"] == 0
    (why,) = runs["autumn"]["refused"]
    assert why.startswith("round 0: ") and "lifetime budget" in why

    text = merchant["statement"]
    assert "made 2 differentially private release(s) in run summer" in text
    assert "Over its lifetime (2 runs with releases: spring, summer)" in text
    assert f"per run: spring {spring:.4g}, summer {summer:.4g}" in text
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "lifetime ε after it" in page
    assert main(["audit", "verify", str(directory)]) == 0  # the chain across runs


def test_the_plots_split_the_latest_run_from_the_lifetime(lived):
    from simulations.audit_report import summarize, verified_chains

    directory, spring, summer, lifetime = lived
    summaries = summarize(verified_chains(directory)[0])
    (name,) = summaries
    assert [r["run"] for r in summaries[name].refusals] == ["autumn"]
    rounds = epsilon_series(summaries)[name]
    assert [r for r, _ in rounds] == [0, 1]  # summer's rounds only: no jump back to round 0
    assert rounds[-1][1] == pytest.approx(summer, rel=1e-9)
    spent, left = budget_bars(summaries)[name]
    assert spent == pytest.approx(summer, rel=1e-9)
    assert spent + left == pytest.approx(summaries[name].latest["epsilon_max"])
    points = lifetime_series(summaries)[name]
    assert [run for _, _, run in points] == ["spring", "spring", "summer", "summer"]
    times = [at for at, _, _ in points]
    assert times == sorted(times)
    epsilons = [eps for _, eps, _ in points]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(lifetime, rel=1e-9)
    assert "It refused round(s) 0 (" in statement(summaries[name])  # autumn, before releasing
