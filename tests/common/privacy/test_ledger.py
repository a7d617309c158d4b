"""The ledger format: durable signed appends, signed heads, torn tails kept, keys enforced."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.privacy.ledger import (
    GENESIS,
    REPAIR,
    Ledger,
    LedgerError,
    head_path,
    read_ledger,
    update_digest,
)
from common.privacy.signing import Signer, verify_signature
from common.privacy.verify import verify_merchant


def _ledger(tmp_path, signer=None, entries=3):
    signer = signer or Signer.generate()
    ledger = Ledger.open(tmp_path / "ledger.jsonl", signer=signer, party="shop")
    for i in range(entries):
        ledger.append("reserve", {"round": i, "epsilon_rdp": 0.5 * i})
    return ledger, signer


def test_entries_round_trip_chained_and_signed(tmp_path):
    ledger, signer = _ledger(tmp_path)
    read = read_ledger(ledger.path)
    assert [e.seq for e in read.entries] == [0, 1, 2, 3]
    assert read.entries[0].kind == GENESIS
    assert read.entries[0].body["public_key"] == signer.public_key
    assert read.entries == ledger.entries
    for before, after in zip(read.entries, read.entries[1:], strict=False):
        assert after.prev == before.hash
    assert all(e.signature_valid(signer.public_key) for e in read.entries)
    assert read.head is not None and read.head.seq == 3 and read.head.hash == ledger.head.hash
    assert verify_merchant(ledger.path).ok


def test_signatures_are_ed25519_from_cryptography(tmp_path):
    signer = Signer.load_or_create(tmp_path / "k.pem")
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    again = Signer.load_or_create(tmp_path / "k.pem")
    assert again.public_key == signer.public_key
    sig = signer.sign(b"payload")
    assert verify_signature(signer.public_key, b"payload", sig)
    assert not verify_signature(signer.public_key, b"payloaD", sig)
    assert not verify_signature(Signer.generate().public_key, b"payload", sig)


def test_a_torn_last_line_is_reported_and_kept_in_a_repair_entry(tmp_path):
    ledger, signer = _ledger(tmp_path)
    torn = b'{"seq":4,"prev":"ab'
    with open(ledger.path, "ab") as handle:
        handle.write(torn)
    read = read_ledger(ledger.path)
    assert read.torn == torn
    assert [p.kind for p in read.problems] == ["torn"]
    assert read.problems[0].line == 5
    verdict = verify_merchant(ledger.path)
    assert not verdict.ok and verdict.first is not None and verdict.first.kind == "torn"

    reopened = Ledger.open(ledger.path, signer=signer, party="shop")
    repair = reopened.head
    assert repair.kind == REPAIR and repair.seq == 4
    assert repair.body["torn_bytes_b64"] and len(repair.body["torn_sha256"]) == 64
    assert verify_merchant(ledger.path).ok  # the repair is part of the signed record


def test_a_damaged_ledger_or_another_key_is_refused(tmp_path):
    ledger, signer = _ledger(tmp_path)
    with pytest.raises(LedgerError, match="another signing key"):
        Ledger.open(ledger.path, signer=Signer.generate(), party="shop")
    lines = ledger.path.read_text().splitlines()
    lines[1] = "not json"
    ledger.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LedgerError, match="line 2"):
        Ledger.open(ledger.path, signer=signer, party="shop")


def test_head_is_rewritten_when_a_crash_left_it_one_behind(tmp_path):
    ledger, signer = _ledger(tmp_path)
    stale = json.loads(head_path(ledger.path).read_text())
    ledger.append("commit", {"round": 9})
    head_path(ledger.path).write_text(json.dumps(stale))  # the head write never happened
    Ledger.open(ledger.path, signer=signer, party="shop")
    assert json.loads(head_path(ledger.path).read_text())["seq"] == 4


def test_update_digest_covers_names_dtypes_shapes_and_values():
    base = {"a": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float32)}
    digest = update_digest(base)
    assert digest == update_digest({"b": base["b"].copy(), "a": base["a"].copy()})
    assert digest != update_digest({**base, "a": base["a"].astype(np.float64)})
    assert digest != update_digest({**base, "a": base["a"].reshape(3, 2)})
    changed = base["b"].copy()
    changed[2] = np.nextafter(np.float32(1), np.float32(2))
    assert digest != update_digest({**base, "b": changed})
    assert digest != update_digest({"c": base["a"], "b": base["b"]})
