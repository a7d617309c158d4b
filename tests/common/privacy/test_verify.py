"""Mutation tests: every edit, deletion, reordering, duplication, truncation and signature
swap of a ledger is detected by ``verify``; an untouched ledger verifies."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from common.privacy.ledger import FIELDS, Ledger
from common.privacy.signing import Signer
from common.privacy.verify import verify_merchant

ENTRIES = 6  # genesis + 6 = 7 entries


@pytest.fixture
def ledger_path(tmp_path) -> Path:
    ledger = Ledger.open(tmp_path / "ledger.jsonl", signer=Signer.generate(), party="shop")
    for i in range(ENTRIES):
        kind = "reserve" if i % 2 == 0 else "commit"
        ledger.append(kind, {"round": i // 2 + 1, "epsilon_rdp": 0.25 * (i + 1), "delta": 1e-6})
    assert verify_merchant(ledger.path).ok
    return ledger.path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _mutate_field(obj: dict, name: str) -> None:
    value = obj[name]
    if name == "seq":
        obj[name] = value + 1
    elif name == "body":
        obj[name] = {**value, "epsilon_rdp": 0.0} if "epsilon_rdp" in value else {**value, "x": 1}
    elif name == "sig":
        raw = bytearray(base64.b64decode(value))
        raw[0] ^= 1
        obj[name] = base64.b64encode(bytes(raw)).decode()
    elif name == "prev":
        obj[name] = ("1" if value[0] == "0" else "0") + value[1:]
    else:
        obj[name] = value + "x"


def _detected(path: Path) -> bool:
    verdict = verify_merchant(path)
    return not verdict.ok and verdict.first is not None


def test_untouched_ledger_verifies(ledger_path):
    verdict = verify_merchant(ledger_path)
    assert verdict.ok and verdict.parties == {"shop": ENTRIES + 1}


@pytest.mark.parametrize("name", FIELDS)
def test_editing_any_field_of_any_entry_is_detected(ledger_path, name):
    original = _lines(ledger_path)
    for index in range(len(original)):
        lines = list(original)
        obj = json.loads(lines[index])
        _mutate_field(obj, name)
        lines[index] = json.dumps(obj)
        _write(ledger_path, lines)
        verdict = verify_merchant(ledger_path)
        assert not verdict.ok, (name, index)
        assert verdict.first is not None and verdict.first.line == index + 1, (name, index)


def test_editing_a_nested_value_names_the_entry_and_the_signature(ledger_path):
    lines = _lines(ledger_path)
    obj = json.loads(lines[3])
    obj["body"]["delta"] = 1e-5
    lines[3] = json.dumps(obj)
    _write(ledger_path, lines)
    first = verify_merchant(ledger_path).first
    assert first is not None
    assert (first.kind, first.line, first.seq) == ("signature", 4, 3)
    assert "edited or its signature replaced" in first.message


def test_deleting_any_entry_is_detected(ledger_path):
    original = _lines(ledger_path)
    for index in range(len(original)):
        _write(ledger_path, original[:index] + original[index + 1 :])
        assert _detected(ledger_path), index


def test_reordering_any_two_entries_is_detected(ledger_path):
    original = _lines(ledger_path)
    for i in range(len(original)):
        for j in range(i + 1, len(original)):
            lines = list(original)
            lines[i], lines[j] = lines[j], lines[i]
            _write(ledger_path, lines)
            assert _detected(ledger_path), (i, j)


def test_duplicating_any_entry_is_detected(ledger_path):
    original = _lines(ledger_path)
    for index in range(len(original)):
        for where in (index + 1, len(original)):  # right after it, or at the end
            lines = list(original)
            lines.insert(where, original[index])
            _write(ledger_path, lines)
            assert _detected(ledger_path), (index, where)


def test_truncating_entries_is_detected(ledger_path):
    original = _lines(ledger_path)
    for keep in range(len(original)):
        _write(ledger_path, original[:keep])
        verdict = verify_merchant(ledger_path)
        assert not verdict.ok, keep
    _write(ledger_path, original[:3])
    first = verify_merchant(ledger_path).first
    assert (
        first is not None and first.kind == "truncated" and "removed from the end" in first.message
    )
    raw = "".join(line + "\n" for line in original)
    ledger_path.write_text(raw[:-20])  # cut inside the last line
    first = verify_merchant(ledger_path).first
    assert first is not None and first.kind == "torn"


def test_swapping_signatures_is_detected(ledger_path):
    original = _lines(ledger_path)
    for i in range(len(original)):
        for j in range(i + 1, len(original)):
            a, b = json.loads(original[i]), json.loads(original[j])
            a["sig"], b["sig"] = b["sig"], a["sig"]
            lines = list(original)
            lines[i], lines[j] = json.dumps(a), json.dumps(b)
            _write(ledger_path, lines)
            first = verify_merchant(ledger_path).first
            assert first is not None and first.kind == "signature" and first.line == i + 1


def test_a_ledger_rewritten_under_another_key_fails_against_its_head(ledger_path, tmp_path):
    forged = Ledger.open(tmp_path / "forged.jsonl", signer=Signer.generate(), party="shop")
    for _ in range(ENTRIES):
        forged.append("commit", {"round": 1, "epsilon_rdp": 0.0})
    ledger_path.write_text(forged.path.read_text())  # the original head file stays
    first = verify_merchant(ledger_path).first
    assert first is not None and first.kind == "head"
