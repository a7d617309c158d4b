"""``fedrec audit``: verify exit codes, the report's files and fields, the epsilon calculator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.privacy.accounting import PrivacyEvent, epsilon_of
from simulations.audit_report import write_report
from simulations.cli import main
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Every field the issue asks a release record to carry, as the HTML names them.
HTML_FIELDS = (
    "round",
    "epsilon_rdp",
    "epsilon_prv",
    "delta",
    "epsilon_max",
    "epsilon_remaining",
    "noise_multiplier",
    "max_grad_norm",
    "sample_rate",
    "steps",
    "unit",
    "adjacency",
    "sampling",
    "accountant",
    "secagg",
    "update_sha256",
    "released",
    "kept_local",
    "versions",
    "refused rounds",
    "non-DP releases",
)


@pytest.fixture
def merchant_dir(tmp_path, data):  # noqa: F811
    merchant = _merchant(tmp_path, data)
    release = merchant.release_item_counts(PLAN, run="run-7")
    merchant.commit(release.reservation, {"counts": release.counts}, metrics={})
    shared = _global(data.num_items)
    for server_round in (1, 2):
        outcome = merchant.train(shared, PLAN, server_round=server_round, run="run-7")
        assert outcome.reservation is not None
        merchant.commit(outcome.reservation, outcome.shared, metrics={"dp-clipped-fraction": 0.5})
        shared = outcome.shared
    merchant.ledger.non_dp_release(
        run="run-7", server_round=2, what="evaluation-metrics", metrics={"ndcg@10": 0.1}
    )
    merchant.store.write_policy(epsilon_max=merchant.report(PLAN).epsilon * 1.01)
    with pytest.raises(Exception, match="above the budget"):
        merchant.train(shared, PLAN, server_round=3, run="run-7")
    return merchant.store.directory


def test_verify_exit_codes_and_first_bad_entry(merchant_dir, capsys):
    ledger = merchant_dir / "ledger.jsonl"
    assert main(["audit", "verify", str(ledger)]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    lines = ledger.read_text().splitlines()
    entry = json.loads(lines[4])
    entry["body"]["epsilon_rdp"] = 0.01  # understate what was spent
    lines[4] = json.dumps(entry)
    ledger.write_text("\n".join(lines) + "\n")
    assert main(["audit", "verify", str(ledger), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert not verdict["ok"]
    assert verdict["problems"][0] | {"message": ""} == {
        "kind": "signature",
        "file": str(ledger),
        "line": 5,
        "seq": 4,
        "message": "",
    }


def test_report_writes_plots_json_and_html_with_every_field(merchant_dir, tmp_path, capsys):
    out = tmp_path / "audit"
    assert main(["audit", "report", str(merchant_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "VERIFIED" in printed and "shop" in printed
    import matplotlib.image

    for name in ("epsilon.png", "budget.png"):
        raw = (out / name).read_bytes()
        assert raw[:8] == PNG_MAGIC
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 10  # not blank
    page = (out / "report.html").read_text()
    for field in HTML_FIELDS:
        assert field in page, field
    assert page.count("data:image/png;base64,") == 2
    report = json.loads((out / "report.json").read_text())
    shop = report["merchants"]["shop"]
    assert [r["round"] for r in shop["releases"]] == [0, 1, 2]
    assert [r["round"] for r in shop["refusals"]] == [3]
    last = shop["releases"][-1]
    assert last["epsilon_rdp"] == pytest.approx(
        epsilon_of(
            [
                PrivacyEvent(last["noise_multiplier"], last["sample_rate"], last["steps_total"]),
                PrivacyEvent(shop["releases"][0]["noise_multiplier"], 1.0, 1),
            ],
            delta=last["delta"],
            accountant="rdp",
        )
    )
    words = shop["statement"]
    for phrase in (
        "epsilon =",
        "delta =",
        "Unit of privacy: one user",
        "Neighbouring datasets",
        "Poisson",
        "sigma =",
        "C =",
        "q =",
        "Kept local and never sent: user_bias.weight, user_embedding.weight",
        "Secure aggregation was off",
        "Opacus",
        "refused round(s) 3",
        "NOT differentially private: dp-clipped-fraction, ndcg@10",
        "What it does not promise",
    ):
        assert phrase in words, phrase


def test_report_of_a_tampered_ledger_says_so(merchant_dir, tmp_path):
    ledger = merchant_dir / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    report = write_report(ledger, tmp_path / "audit")
    assert not report["verified"] and "sequence" in report["problems"][0]
    assert "FAILED" in (tmp_path / "audit" / "report.html").read_text()


def test_epsilon_calculator_matches_the_accountants(capsys):
    args = ["audit", "epsilon", "--sigma", "1.1", "--q", "0.01", "--steps", "1000"]
    assert main([*args, "--delta", "1e-6"]) == 0
    out = capsys.readouterr().out
    event = PrivacyEvent(noise_multiplier=1.1, sample_rate=0.01, steps=1000)
    for accountant in ("rdp", "prv"):
        expected = epsilon_of([event], delta=1e-6, accountant=accountant)
        assert f"{expected:.4f}" in out
    assert main(["audit", "epsilon", "--q", "2", "--steps", "1", "--delta", "1e-6"]) == 2
    assert "0 < q <= 1" in capsys.readouterr().err


def test_a_run_refused_before_execution_is_stated_apart_from_budget_refusals(merchant_dir):
    from client.run_guard import record_refusal
    from common.privacy.ledger import read_ledger
    from simulations.audit_report import statement, summarize

    record_refusal(merchant_dir, reason="unsigned", flower_run=42, run_name="evil")
    entries = read_ledger(merchant_dir / "ledger.jsonl").entries
    (summary,) = summarize({"m": entries}).values()
    assert [r["round"] for r in summary.refusals] == [3]  # the budget refusal only
    text = statement(summary)
    assert "It refused round(s) 3 because" in text
    assert "refused 1 run(s) before executing anything of them: evil (Flower run 42): " in text
