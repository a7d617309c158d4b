"""``fedrec audit``: verify exit codes, the report's files and fields, the epsilon calculator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.privacy.accounting import PrivacyEvent, epsilon_of
from common.privacy.ledger import read_ledger
from simulations.audit_report import UnverifiedLedger, write_report
from simulations.cli import main
from tests.client.test_private_merchant import PLAN, _global, _merchant, data  # noqa: F401
from tests.common.privacy.test_verify_identity import run_dir  # noqa: F401

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

    for name in ("epsilon.png", "budget.png", "lifetime.png"):
        raw = (out / name).read_bytes()
        assert raw[:8] == PNG_MAGIC
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 300
        assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 10  # not blank
    page = (out / "report.html").read_text()
    for field in HTML_FIELDS:
        assert field in page, field
    assert page.count("data:image/png;base64,") == 3
    report = json.loads((out / "report.json").read_text())
    shop = report["merchants"]["shop"]
    (run,) = shop["runs"]  # one run: its epsilon is the lifetime epsilon
    assert run["releases"] == 3 and run["run_epsilon"] == run["lifetime_epsilon"]
    assert run["refused"] and run["refused"][0].startswith("round 3: ")
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


def test_report_of_a_tampered_ledger_is_refused(merchant_dir, tmp_path, capsys):
    ledger = merchant_dir / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    with pytest.raises(UnverifiedLedger, match="FAILED verification .* sequence"):
        write_report(ledger, tmp_path / "audit")
    assert not (tmp_path / "audit").exists()  # no figures anywhere
    assert main(["audit", "report", str(ledger), "--out", str(tmp_path / "audit")]) == 1
    captured = capsys.readouterr()
    assert "line 4 (entry seq 4): sequence" in captured.err
    assert "ε" not in captured.out and "epsilon =" not in captured.out


def _resign(directory, edit):
    """Rewrite a merchant's ledger and head under its own key, ``edit`` applied to each body."""
    from common.privacy.ledger import Ledger, head_path, read_ledger
    from common.privacy.signing import Signer

    entries = read_ledger(directory / "ledger.jsonl").entries
    (directory / "ledger.jsonl").unlink()
    head_path(directory / "ledger.jsonl").unlink()
    ledger = Ledger.open(
        directory / "ledger.jsonl",
        signer=Signer.load_or_create(directory / "ledger.key"),
        party=entries[0].party,
        genesis={k: v for k, v in entries[0].body.items() if k not in ("party", "public_key")},
    )
    for entry in entries[1:]:
        ledger.append(entry.kind, edit(entry.seq, dict(entry.body)))


def test_an_understated_epsilon_resigned_by_its_own_key_fails(merchant_dir, capsys):
    entries = read_ledger(merchant_dir / "ledger.jsonl").entries
    counts, round1, round2 = [e for e in entries if e.kind == "reserve"]
    true = round2.body["epsilon_rdp"]
    understated = (round1.body["epsilon_rdp"] + true) / 2  # still above round 1: monotone
    edited = {round2.seq} | {
        e.seq for e in entries if e.kind == "commit" and e.body["reserve_seq"] == round2.seq
    }

    def edit(seq, body):
        if seq in edited:  # round 2's reserve and commit
            body["epsilon_rdp"] = understated
        return body

    _resign(merchant_dir, edit)
    assert main(["audit", "verify", str(merchant_dir), "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    first = verdict["problems"][0]
    assert (first["kind"], first["seq"]) == ("epsilon", round2.seq)
    assert f"records epsilon_rdp = {understated:.6g}" in first["message"]
    assert f"the 3 privacy event(s) reserved up to it give {true:.6g}" in first["message"]
    assert "understated" in first["message"]


def test_report_json_carries_heads_and_an_edit_fails_verify(merchant_dir, tmp_path, capsys):
    out = tmp_path / "audit"
    report = write_report(merchant_dir, out)
    entries = read_ledger(merchant_dir / "ledger.jsonl").entries
    assert report["heads"] == {"shop": {"seq": entries[-1].seq, "hash": entries[-1].hash}}
    path = out / "report.json"
    assert main(["audit", "verify", str(path)]) == 0
    capsys.readouterr()

    saved = json.loads(path.read_text())
    saved["merchants"]["shop"]["releases"][-1]["epsilon_rdp"] = 0.03
    path.write_text(json.dumps(saved))
    assert main(["audit", "verify", str(path)]) == 1
    assert "digest does not match" in capsys.readouterr().out

    from simulations.audit_report import report_digest

    saved["digest"] = report_digest(saved)  # an editor who also recomputes the digest
    path.write_text(json.dumps(saved))
    assert main(["audit", "verify", str(path), "--json"]) == 1
    problem = json.loads(capsys.readouterr().out)["problems"][0]
    assert problem["kind"] == "report"
    assert (
        "merchants.shop.releases[2].epsilon_rdp says 0.03, the ledgers give" in (problem["message"])
    )


def test_a_report_written_beside_its_ledger_is_checked_by_verify_of_the_directory(
    merchant_dir, capsys
):
    write_report(merchant_dir, merchant_dir)
    assert main(["audit", "verify", str(merchant_dir)]) == 0
    capsys.readouterr()
    path = merchant_dir / "report.json"
    saved = json.loads(path.read_text())
    saved["heads"]["shop"]["seq"] -= 1
    path.write_text(json.dumps(saved))
    assert main(["audit", "verify", str(merchant_dir)]) == 1
    printed = " ".join(capsys.readouterr().out.split())
    assert "FAILED" in printed and "report: edited after it was written" in printed


def test_a_report_of_an_earlier_head_still_verifies_after_the_ledger_grows(merchant_dir, tmp_path):
    from client.state.ledger import MerchantLedger

    write_report(merchant_dir, tmp_path / "audit")
    MerchantLedger(merchant_dir, "shop").non_dp_release(
        run="run-7", server_round=3, what="evaluation-metrics", metrics={"ndcg@10": 0.2}
    )
    from simulations.audit_report_check import verify_report

    assert verify_report(tmp_path / "audit" / "report.json").ok


def test_run_report_takes_the_coordinators_copy_and_refuses_a_shadow_ledger(
    run_dir,  # noqa: F811
    tmp_path,
):
    from tests.common.privacy.test_verify_identity import _entries, _forge

    report = write_report(run_dir, tmp_path / "audit")
    zero = report["merchants"]["merchant-00"]["releases"]
    assert zero[-1]["epsilon_rdp"] == 2.998
    assert set(report["heads"]) == {"coordinator", "merchant-00", "merchant-01"}

    _forge(_entries(run_dir, "merchant-00"), run_dir / "merchants" / "zzz", scale=0.01)
    with pytest.raises(UnverifiedLedger, match="zzz/ledger.jsonl: directory: .*'merchant-00'"):
        write_report(run_dir, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    assert main(["audit", "verify", str(run_dir)]) == 1
    assert main(["audit", "verify", str(tmp_path / "audit" / "report.json")]) == 1


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
    from client.deploy.run_guard import record_refusal
    from common.privacy.ledger import read_ledger
    from simulations.audit_report import statement, summarize

    record_refusal(merchant_dir, reason="unsigned", flower_run=42, run_name="evil")
    entries = read_ledger(merchant_dir / "ledger.jsonl").entries
    (summary,) = summarize({"m": entries}).values()
    assert [r["round"] for r in summary.refusals] == [3]  # the budget refusal only
    text = statement(summary)
    assert "It refused round(s) 3 (" in text and "above the budget" in text
    assert "refused 1 run(s) before executing anything of them: evil (Flower run 42): " in text


def test_plots_show_the_accountant_that_enforced_each_budget():
    from simulations.audit_plots import budget_bars, enforcing_accountants, epsilon_series
    from simulations.audit_statement import MerchantSummary

    def release(rnd, rdp, prv, accountant, remaining):
        return {
            "round": rnd,
            "epsilon_rdp": rdp,
            "epsilon_prv": prv,
            "accountant": accountant,
            "epsilon_remaining": remaining,
        }

    prv_shop = MerchantSummary(
        "prv-shop", releases=[release(0, 0.4, 0.3, "prv", 2.7), release(1, 2.0, 1.6, "prv", 1.4)]
    )
    rdp_shop = MerchantSummary("rdp-shop", releases=[release(1, 1.0, 0.8, "rdp", 2.0)])
    summaries = {"prv-shop": prv_shop, "rdp-shop": rdp_shop}
    assert epsilon_series(summaries) == {"prv-shop": [(0, 0.3), (1, 1.6)], "rdp-shop": [(1, 1.0)]}
    bars = budget_bars(summaries)
    assert bars == {"prv-shop": (1.6, 1.4), "rdp-shop": (1.0, 2.0)}
    assert sum(bars["prv-shop"]) == pytest.approx(3.0)  # spent + remaining = the budget
    assert enforcing_accountants(summaries) == "PRV, RDP"
