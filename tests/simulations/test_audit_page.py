"""The privacy officer's ``report.html`` in a real browser at 1280 px, its plots, its wording."""

from __future__ import annotations

import shutil
from pathlib import Path

from simulations.audit_report import write_report
from tests.client.test_private_merchant import data  # noqa: F401
from tests.simulations.headless import chromium, full_page_png
from tests.simulations.test_audit import merchant_dir  # noqa: F401

SCREEN = 1280
SHARED_SCREENSHOT = Path("/tmp/h_rep_report.png")  # for a person to look at
PAGE_FACTS = """
const tables = [...document.querySelectorAll('table')];
const images = [...document.querySelectorAll('img')];
return {
  scroll: document.documentElement.scrollWidth,
  client: document.documentElement.clientWidth,
  first: tables.length ? tables[0].id : null,
  headers: tables.length ? [...tables[0].rows[0].cells].map(c => c.textContent) : [],
  cells: tables.length ? [...tables[0].rows[1].cells].map(c => c.textContent) : [],
  widest: Math.max(...[...document.body.querySelectorAll('*')].map(
    e => e.getBoundingClientRect().right)),
  images: images.map(i => [i.naturalWidth, i.getBoundingClientRect().width]),
  details: document.querySelectorAll('details').length,
  verdict: document.getElementById('verdict').textContent,
};
"""


def test_report_page_fits_a_1280px_screen_summary_table_first(merchant_dir, tmp_path):  # noqa: F811
    write_report(merchant_dir, tmp_path / "audit")
    page = tmp_path / "audit" / "report.html"

    with chromium(width=SCREEN, height=900, profile=tmp_path / "profile") as browser:
        browser.get(page.as_uri())
        folded = browser.execute_script(PAGE_FACTS)
        shot = full_page_png(browser, tmp_path / "report.png")
        browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
        unfolded = browser.execute_script(PAGE_FACTS)
    shutil.copyfile(shot, SHARED_SCREENSHOT)

    assert folded["client"] == SCREEN
    assert folded["scroll"] <= SCREEN and folded["widest"] <= SCREEN
    assert unfolded["scroll"] <= SCREEN  # every release's fields opened: still no side scroll
    assert folded["verdict"] == "Ledger verification: VERIFIED"
    assert folded["first"] == "summary"
    assert folded["headers"] == [
        "merchant",
        "ε spent",
        "δ",
        "budget",
        "lifetime ε",
        "unit",
        "accountant",
        "status",
        "refusals",
    ]
    shop, spent, delta, budget, lifetime, unit, accountant, status, refusals = folded["cells"]
    assert lifetime == f"{spent} (1 run(s))"  # one run: the lifetime is the run
    assert (shop, delta, unit, accountant) == ("shop", "1e-05", "user", "RDP")
    assert float(spent) <= float(budget)
    assert status == "stopped at its budget" and refusals == "1 (round 3)"
    assert folded["details"] == 3  # one per release: item counts, rounds 1 and 2
    assert len(folded["images"]) == 3  # epsilon over rounds, budget, lifetime epsilon
    for natural, shown in folded["images"]:
        assert natural > 300 and 0 < shown <= SCREEN  # decoded, and shrunk to fit if wider
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_statement_names_users_and_the_promise_is_said_once(merchant_dir, tmp_path):  # noqa: F811
    report = write_report(merchant_dir, tmp_path / "audit")
    page = (tmp_path / "audit" / "report.html").read_text()

    words = report["merchants"]["shop"]["statement"]
    assert "Sampling: Poisson sampling of users: every user with training data" in words
    assert "examples" not in words
    assert page.count("What joint differential privacy promises") == 1
    assert page.count("Sampling: Poisson sampling of users") == 1  # the statement, not each row


def test_sampling_wording_per_unit_and_for_ledgers_that_said_examples():
    from common.privacy.config import LEGACY_SAMPLING, sampling_description
    from simulations.audit_statement import MerchantSummary, statement

    assert sampling_description("user").startswith("Poisson sampling of users:")
    assert sampling_description("interaction").startswith("Poisson sampling of interactions:")
    counts = "none: one Gaussian release over all units"
    assert sampling_description("user", counts) == counts  # a ledger's own words stand
    old = {"round": 1, "release": "dp-sgd", "unit": "interaction", "sampling": LEGACY_SAMPLING}
    words = statement(MerchantSummary("old", releases=[old]))
    assert "Sampling: Poisson sampling of interactions: every training interaction" in words
    assert LEGACY_SAMPLING not in words


def test_interaction_unit_samples_interactions_and_its_ledger_says_so(tmp_path, data):  # noqa: F811
    import dataclasses

    from client.training.private import private_population
    from common.privacy.ledger import read_ledger
    from tests.client.test_private_merchant import PLAN, _global, _merchant

    plan = dataclasses.replace(
        PLAN, privacy=dataclasses.replace(PLAN.privacy, unit="interaction", count_share=0.0)
    )
    merchant = _merchant(tmp_path, data)
    outcome = merchant.train(_global(data.num_items), plan, server_round=1, run="r")
    assert outcome.reservation is not None

    entries = read_ledger(merchant.store.directory / "ledger.jsonl").entries
    (reserve,) = [e for e in entries if e.kind == "reserve"]
    assert reserve.body["unit"] == "interaction"
    assert reserve.body["sampling"].startswith("Poisson sampling of interactions:")
    assert reserve.body["population"] == len(private_population(data, "interaction"))
    assert reserve.body["population"] == data.num_train  # q is over interactions, not users


def test_budget_legend_covers_no_bar_and_epsilon_axis_starts_at_zero():
    from simulations.audit_plots import budget_figure, epsilon_figure
    from simulations.audit_statement import MerchantSummary

    def release(rnd: int, eps: float, left: float) -> dict:
        return {"round": rnd, "epsilon_rdp": eps, "accountant": "rdp", "epsilon_remaining": left}

    summaries = {  # one merchant spent all of it: its bar reaches the right edge
        "a": MerchantSummary("a", releases=[release(1, 4.0, 0.0)]),
        "b": MerchantSummary("b", releases=[release(1, 1.0, 3.0)]),
    }
    fig = budget_figure(summaries)
    fig.canvas.draw()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    bars = [patch.get_window_extent() for patch in ax.patches]
    assert len(bars) == 4 and not any(legend.overlaps(bar) for bar in bars)
    assert ax.get_xlim()[0] == 0

    fig = epsilon_figure({"a": summaries["a"]})  # a single epsilon value
    (ax,) = fig.axes
    low, high = ax.get_ylim()
    assert low == 0 and high > 4.0
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert 1 in ticks and all(float(t).is_integer() for t in ticks)


def test_summary_rows_for_a_silent_merchant_and_the_coordinators_client_level_releases():
    from simulations.audit_html import summary_rows
    from simulations.audit_statement import MerchantSummary

    coordinator = {
        "releases": [
            {"epsilon": 0.5, "delta": 1e-5, "unit": "client", "accountant": "flwr-rdp"},
            {
                "epsilon": 0.9,
                "delta": 1e-5,
                "unit": "client",
                "accountant": "flwr-rdp",
                "published": True,
            },
        ],  # fmt: skip
        "statement": "",
    }

    rows = summary_rows({"idle": MerchantSummary("idle")}, coordinator)

    assert rows == [
        ("idle", "-", "-", "-", "-", "-", "-", "no DP release", "0"),
        (
            "coordinator (client-level)",
            "0.9",
            "1e-05",
            "-",
            "-",
            "client",
            "flwr-rdp",
            "2 aggregate(s), 1 rejected",
            "-",
        ),
    ]
