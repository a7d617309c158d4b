"""Identities, epsilon and rollback: a run directory's merchant files are bound to the parties
and keys the coordinator recorded; cumulative epsilon never falls; a rolled-back merchant ledger
fails against the head the coordinator acknowledged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from client.state.ledger import MerchantLedger
from common.privacy.held_ack import HeldAck
from common.privacy.ledger import (
    CLOSE,
    COMMIT,
    GENESIS,
    MERCHANT_ENTRIES,
    RESERVE,
    ROUND_HEAD,
    Entry,
    Ledger,
    countersigned_path,
    head_path,
    read_ledger,
)
from common.privacy.signing import Signer, key_fingerprint
from common.privacy.verify import verify_merchant, verify_path

PARTIES = ("merchant-00", "merchant-01")
EPSILONS = (1.0, 2.0, 2.998)


def _merchant(directory: Path, party: str, epsilons=EPSILONS, signer=None) -> Ledger:
    ledger = Ledger.open(
        directory / "ledger.jsonl",
        signer=signer or Signer.generate(),
        party=party,
        genesis={"role": "merchant"},
    )
    for server_round, epsilon in enumerate(epsilons, start=1):
        body = {"round": server_round, "release": "dp-sgd", "epsilon_rdp": epsilon, "delta": 1e-5}
        reserve = ledger.append(RESERVE, body)
        ledger.append(COMMIT, {**body, "reserve_seq": reserve.seq, "update_sha256": "00"})
    return ledger


def _forge(entries: list[Entry], directory: Path, *, scale: float) -> Ledger:
    """merchant-00's entries re-signed under a fresh key, every epsilon times ``scale``."""
    forged = Ledger.open(
        directory / "ledger.jsonl",
        signer=Signer.generate(),
        party=entries[0].party,
        genesis={"role": "merchant"},
    )
    for entry in entries[1:]:
        body = dict(entry.body)
        if "epsilon_rdp" in body:
            body["epsilon_rdp"] *= scale
        forged.append(entry.kind, body)
    return forged


def _run(run: Path, signers: dict[str, Signer] | None = None) -> Path:
    """Two merchants' ledgers and the coordinator's copy of them, closed after one round."""
    signers = signers or {}
    merchants = {p: _merchant(run / "merchants" / p, p, signer=signers.get(p)) for p in PARTIES}
    fed = Ledger.open(
        run / "ledger" / "federation.jsonl",
        signer=signers.get("coordinator") or Signer.generate(),
        party="coordinator",
        genesis={"role": "coordinator", "run": "r"},
    )
    for node, (name, ledger) in enumerate(merchants.items()):
        fed.append(
            MERCHANT_ENTRIES,
            {
                "merchant": name,
                "node": node,
                "round": 1,
                "phase": "train",
                "entries": [e.to_json() for e in ledger.entries],
                "problems": [],
            },
        )
    heads = {n: {"seq": m.head.seq, "hash": m.head.hash} for n, m in merchants.items()}
    fed.append(ROUND_HEAD, {"run": "r", "round": 1, "heads": heads})
    fed.append(CLOSE, {"run": "r", "rounds": 1, "stopped_early": ""})
    return run


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = _run(tmp_path / "run")
    assert verify_path(run).ok
    return run


def test_a_run_directory_holding_a_partys_signing_key_fails(tmp_path):
    """An old simulation's layout: keys beside the ledgers they sign, in the published run."""
    run = tmp_path / "run"
    inside = {
        "coordinator": Signer.load_or_create(run / "coordinator.key"),
        "merchant-01": Signer.load_or_create(run / "merchants" / "merchant-01" / "ledger.key"),
    }
    elsewhere = Signer.load_or_create(tmp_path / "unrelated.key")  # signs nothing here
    (run / "unrelated.key").write_bytes((tmp_path / "unrelated.key").read_bytes())
    _run(run, inside)
    verdict = verify_path(run)
    assert [(p.kind, p.source) for p in verdict.problems] == [
        ("exposed-key", str(run / "coordinator.key")),
        ("exposed-key", str(run / "merchants" / "merchant-01" / "ledger.key")),
    ]
    assert "party 'merchant-01'" in verdict.problems[1].message
    assert key_fingerprint(inside["merchant-01"].public_key) in verdict.problems[1].message
    assert elsewhere.public_key not in {p.message for p in verdict.problems}
    (run / "coordinator.key").unlink()
    (run / "merchants" / "merchant-01" / "ledger.key").unlink()
    assert verify_path(run).ok  # the same ledgers, their keys kept elsewhere


def _entries(run: Path, party: str) -> list[Entry]:
    return read_ledger(run / "merchants" / party / "ledger.jsonl").entries


def test_an_untouched_run_verifies_with_every_party(run_dir):
    verdict = verify_path(run_dir)
    assert verdict.ok and verdict.notes == []
    assert verdict.parties == {"coordinator": 5, "merchant-00": 7, "merchant-01": 7}


def test_a_shadow_ledger_signed_with_a_fresh_key_fails_naming_file_and_party(run_dir):
    shadow = run_dir / "merchants" / "zzz"
    forged = _forge(_entries(run_dir, "merchant-00"), shadow, scale=0.01)
    assert verify_merchant(forged.path).ok  # on its own it is a perfectly good ledger
    verdict = verify_path(run_dir)
    assert not verdict.ok
    first = verdict.first
    assert first is not None and first.source == str(forged.path)
    assert first.kind == "directory" and "'zzz'" in first.message
    assert "'merchant-00'" in first.message
    kinds = {p.kind: p for p in verdict.problems}
    assert set(kinds) == {"directory", "key", "duplicate-party"}
    recorded = _entries(run_dir, "merchant-00")[0].body["public_key"]
    assert key_fingerprint(recorded) in kinds["key"].message
    assert key_fingerprint(forged.entries[0].body["public_key"]) in kinds["key"].message
    assert "2 files claim party 'merchant-00'" in kinds["duplicate-party"].message


def test_a_merchant_file_replaced_by_a_fresh_key_forgery_fails(run_dir):
    directory = run_dir / "merchants" / "merchant-00"
    entries = _entries(run_dir, "merchant-00")
    shutil.rmtree(directory)
    _forge(entries, directory, scale=0.01)
    verdict = verify_path(run_dir)
    assert [p.kind for p in verdict.problems] == ["key"]
    assert verdict.first is not None and "party 'merchant-00'" in verdict.first.message


def test_an_unknown_party_fails(run_dir):
    stranger = _merchant(run_dir / "merchants" / "merchant-09", "merchant-09")
    verdict = verify_path(run_dir)
    assert [p.kind for p in verdict.problems] == ["unknown-party"]
    first = verdict.first
    assert first is not None and first.source == str(stranger.path)
    assert "'merchant-09' is not one the coordinator recorded" in first.message
    assert "merchant-00, merchant-01" in first.message


def test_a_directory_named_after_another_party_fails(run_dir):
    merchants = run_dir / "merchants"
    (merchants / "merchant-01").rename(merchants / "renamed")
    verdict = verify_path(run_dir)
    assert [p.kind for p in verdict.problems] == ["directory"]
    assert verdict.first is not None
    assert "directory 'renamed' but its ledger belongs to party 'merchant-01'" in (
        verdict.first.message
    )


def test_two_files_claiming_one_party_fail(run_dir):
    merchants = run_dir / "merchants"
    shutil.copytree(merchants / "merchant-01", merchants / "merchant-01-copy")
    verdict = verify_path(run_dir)
    assert sorted(p.kind for p in verdict.problems) == ["directory", "duplicate-party"]
    duplicate = next(p for p in verdict.problems if p.kind == "duplicate-party")
    assert "merchant-01-copy" in duplicate.message and "merchant-01/ledger" in duplicate.message


def test_cumulative_epsilon_that_falls_fails(tmp_path):
    ledger = _merchant(tmp_path / "shop", "shop", epsilons=(1.0, 2.0, 1.5))
    verdict = verify_merchant(ledger.path)
    assert not verdict.ok
    first = verdict.first
    assert first is not None and (first.kind, first.seq, first.line) == ("epsilon", 5, 6)
    assert "shop's cumulative epsilon_rdp falls from 2 (entry seq 3) to 1.5" in first.message


def test_a_well_signed_chain_whose_epsilon_falls_fails(tmp_path):
    from common.privacy.chain_check import check_chain

    falling = _merchant(tmp_path / "x", "merchant-00", epsilons=(2.0, 1.0))
    assert not check_chain(falling.entries, source="x").problems  # well signed, yet:
    first = verify_merchant(falling.path).first
    assert first is not None and first.kind == "epsilon"


def _merchant_ledger(directory: Path) -> MerchantLedger:
    ledger = MerchantLedger(directory, "shop-a")
    for server_round in (1, 2, 3):
        body = {"round": server_round, "release": "dp-sgd", "epsilon_rdp": float(server_round)}
        seq = ledger.reserve(body)
        ledger.commit(seq, update_sha256="00", non_dp_metrics={})
    return ledger


def _snapshot(ledger: MerchantLedger, to: Path) -> None:
    to.mkdir()
    for path in (ledger.path, head_path(ledger.path)):
        shutil.copy(path, to / path.name)


def _restore(ledger: MerchantLedger, snapshot: Path) -> None:
    for path in snapshot.iterdir():
        shutil.copy(path, ledger.directory / path.name)


def test_the_merchant_keeps_the_newest_head_the_coordinator_holds(tmp_path):
    ledger = _merchant_ledger(tmp_path / "shop-a")
    assert ledger.lines_after(-1) and not countersigned_path(ledger.path).exists()
    assert len(ledger.lines_after(4)) == 2
    stored = read_ledger(ledger.path).entries[4]
    import json

    kept = json.loads(countersigned_path(ledger.path).read_text())
    assert (kept["party"], kept["seq"], kept["hash"]) == ("shop-a", 4, stored.hash)
    ledger.lines_after(2)  # an older acknowledgement (another coordinator) never lowers it
    again = MerchantLedger(ledger.directory, "shop-a")
    again.lines_after(3)
    assert json.loads(countersigned_path(ledger.path).read_text())["seq"] == 4
    assert verify_merchant(ledger.path).ok


def test_a_rolled_back_ledger_fails_against_the_countersigned_head(tmp_path):
    ledger = _merchant_ledger(tmp_path / "shop-a")
    snapshot = tmp_path / "snapshot"
    _snapshot(ledger, snapshot)  # 7 entries, signed by the same key
    ledger.reserve({"round": 4, "release": "dp-sgd", "epsilon_rdp": 4.0})
    ledger.lines_after(7)
    assert verify_merchant(ledger.path).ok
    digest = ledger.ledger.entries[7].hash

    _restore(ledger, snapshot)  # the chain and its signed head are intact, yet:
    verdict = verify_merchant(ledger.path)
    assert [p.kind for p in verdict.problems] == ["rollback"]
    first = verdict.first
    assert first is not None and first.source == str(ledger.path)
    assert first.message.startswith(
        f"rolled back: the coordinator countersigned shop-a's seq 7 hash {digest}"
    )
    assert "ends after 7 entries" in first.message
    from simulations.cli import main

    assert main(["audit", "verify", str(ledger.directory)]) == 1  # `fedrec audit verify STATE`


def test_a_rolled_back_then_regrown_ledger_fails_too(tmp_path):
    ledger = _merchant_ledger(tmp_path / "shop-a")
    snapshot = tmp_path / "snapshot"
    _snapshot(ledger, snapshot)
    ledger.reserve({"round": 4, "release": "dp-sgd", "epsilon_rdp": 4.0})
    ledger.lines_after(7)
    _restore(ledger, snapshot)
    regrown = MerchantLedger(ledger.directory, "shop-a")  # same key, a different seq 7
    regrown.reserve({"round": 4, "release": "dp-sgd", "epsilon_rdp": 3.5})
    verdict = verify_merchant(ledger.path)
    assert [p.kind for p in verdict.problems] == ["rollback"]
    assert "holds another entry at that seq" in verdict.problems[0].message


def test_a_genesis_only_ledger_has_no_epsilon_to_check(tmp_path):
    ledger = Ledger.open(tmp_path / "l.jsonl", signer=Signer.generate(), party="p")
    assert ledger.entries[0].kind == GENESIS and verify_merchant(ledger.path).ok


def _ack(ledger: MerchantLedger, seq: int, signer: Signer) -> str:
    entry = ledger.ledger.entries[seq]
    return HeldAck(party="shop-a", seq=seq, hash=entry.hash, run="r").signed(signer).to_text()


def test_the_countersigned_head_carries_the_coordinators_signature_checked_by_verify(tmp_path):
    import json

    coordinator = Signer.generate()
    ledger = _merchant_ledger(tmp_path / "shop-a")
    (ledger.directory / "operator.pub").write_text(coordinator.public_key + "\n")
    ledger.lines_after(4, ack=_ack(ledger, 4, coordinator))
    path = countersigned_path(ledger.path)
    kept = json.loads(path.read_text())
    assert kept["coordinator"]["public_key"] == coordinator.public_key
    assert verify_merchant(ledger.path).ok

    kept["seq"], kept["hash"] = 2, ledger.ledger.entries[2].hash  # lowered by hand
    path.write_text(json.dumps(kept))
    first = verify_merchant(ledger.path).first
    assert first is not None and first.kind == "countersigned"
    assert "does not verify: the file was edited" in first.message

    impostor = Signer.generate()  # a genuine signature, by a key the merchant never pinned
    path.unlink()
    fresh = MerchantLedger(ledger.directory, "shop-a")
    fresh.lines_after(5, ack=_ack(fresh, 5, impostor))
    first = verify_merchant(ledger.path).first
    assert first is not None and first.kind == "countersigned"
    assert "not by the operator key this merchant pinned" in first.message


def test_an_acknowledgement_of_another_entry_is_not_kept_as_signed(tmp_path):
    import json

    coordinator = Signer.generate()
    ledger = _merchant_ledger(tmp_path / "shop-a")
    ledger.lines_after(4, ack=_ack(ledger, 3, coordinator))  # signs seq 3, says have=4
    kept = json.loads(countersigned_path(ledger.path).read_text())
    assert kept["seq"] == 4 and "coordinator" not in kept
    assert verify_merchant(ledger.path).ok
