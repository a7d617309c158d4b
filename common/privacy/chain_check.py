"""One party's ledger on its own: chain, signatures, signed head, countersigned head.

What is checked, for every ledger file:

* each line is a complete entry (a torn last line is a problem, not skipped;
  :func:`common.privacy.ledger.read_ledger` reports it);
* entry ``n`` has ``seq == n`` (duplicates and reorderings are named) and
  ``prev`` equal to the hash of entry ``n - 1``;
* the first entry is a genesis naming the party's public key, and every
  entry's Ed25519 signature verifies under it;
* the signed head beside the file verifies and names an entry present with
  that hash (entries removed from the end are detected).

Rollback: a merchant keeps, beside its ledger, the newest of its entries the
coordinator acknowledged holding (``ledger.countersigned.json``, written by
:mod:`client.state.ledger`, with the coordinator's signature of that statement,
:mod:`common.privacy.held_ack`, checked against the operator key the
merchant pinned; the coordinator records those entries in its signed
ledger and countersigns them at the round's end). A ledger shorter than that
entry, or holding another entry at its seq, was rolled back to an older
snapshot. A snapshot that rolls that file back too is caught only against the
coordinator's copy (:mod:`common.privacy.identity_check`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from common.constants import OPERATOR_PUBLIC_KEY_FILE
from common.privacy.held_ack import HeldAck
from common.privacy.ledger import (
    ABORT,
    COMMIT,
    GENESIS,
    RESERVE,
    ZERO_HASH,
    Entry,
    LedgerFile,
    Problem,
    countersigned_path,
)
from common.privacy.signing import key_fingerprint


@dataclass
class ChainCheck:
    """One party's chain: who, with which key, and what is wrong with it."""

    party: str | None
    public_key: str | None
    entries: list[Entry]
    problems: list[Problem] = field(default_factory=list)


def check_chain(
    entries: list[Entry],
    *,
    source: str,
    lines: list[int] | None = None,
    expect_key: str | None = None,
) -> ChainCheck:
    """Sequence, hash chain, genesis and every signature of one party's entries."""
    check = ChainCheck(party=None, public_key=None, entries=entries)
    if not entries:
        check.problems.append(Problem("empty", "no entries", source=source))
        return check

    def problem(kind: str, message: str, index: int) -> None:
        line = lines[index] if lines else None
        check.problems.append(
            Problem(kind, message, source=source, line=line, seq=entries[index].seq)
        )

    first = entries[0]
    key = first.body.get("public_key")
    if first.kind != GENESIS or first.seq != 0 or first.prev != ZERO_HASH or not key:
        problem("genesis", "the first entry is not a genesis entry naming a public key", 0)
    check.party, check.public_key = first.party, str(key) if key else None
    if expect_key is not None and key != expect_key:
        problem("key", "the chain is signed by another key than the one this party registered", 0)
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        if index > 0:
            if entry.seq != index:
                if entry.seq in seen:
                    problem(
                        "duplicate", f"seq {entry.seq} appears again at position {index}", index
                    )
                else:
                    problem(
                        "sequence",
                        f"expected seq {index}, found {entry.seq}: entries were deleted, "
                        "inserted or reordered",
                        index,
                    )
            elif entry.prev != entries[index - 1].hash:
                problem(
                    "chain",
                    f"prev does not match the hash of entry {index - 1}: an entry before it was "
                    "edited, deleted or reordered",
                    index,
                )
        seen.add(entry.seq)
        if entry.party != check.party:
            problem("party", f"signed as {entry.party!r} in {check.party!r}'s ledger", index)
        if check.public_key and not entry.signature_valid(check.public_key):
            problem(
                "signature",
                "the signature does not verify under the party's key: the entry was edited or "
                "its signature replaced",
                index,
            )
    return check


def check_head(file: LedgerFile, check: ChainCheck) -> list[Problem]:
    """The signed head beside a ledger file must name an entry present, with its hash."""
    source = str(file.path)
    head = file.head
    if head is None:
        return [
            Problem(
                "head",
                f"{file.head_problem}: entries removed from the end could not be detected",
                source=source,
            )
        ]
    if check.public_key is None or head.public_key != check.public_key:
        return [Problem("head", "the head is signed by another key than the ledger", source=source)]
    if not head.signature_valid(check.public_key):
        return [Problem("head", "the head's signature does not verify", source=source)]
    count = len(file.entries)
    if head.seq >= count:
        return [
            Problem(
                "truncated",
                f"the signed head names entry seq {head.seq} but the file ends after "
                f"{count} entries: entries were removed from the end",
                source=source,
                seq=head.seq,
            )
        ]
    if file.entries[head.seq].hash != head.hash:
        return [
            Problem(
                "head",
                f"entry seq {head.seq} does not match the signed head",
                source=source,
                seq=head.seq,
            )
        ]
    return []


def check_countersigned(file: LedgerFile, check: ChainCheck) -> list[Problem]:
    """The ledger must still hold the newest entry the coordinator acknowledged holding.

    Absent file: nothing to compare (a ledger never sent, or a coordinator
    without a ledger); the coordinator's copy is then the only check.
    """
    path = countersigned_path(file.path)
    if not path.is_file():
        return []
    source = str(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        party, seq, digest = str(obj["party"]), int(obj["seq"]), str(obj["hash"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return [Problem("countersigned", f"unreadable ({exc})", source=source)]
    if check.party is not None and party != check.party:
        return [
            Problem(
                "countersigned",
                f"names party {party!r}, but {file.path.name} is {check.party!r}'s ledger",
                source=source,
            )
        ]
    if "coordinator" in obj:
        problem = _ack_problem(obj, file.path.parent, party=party, seq=seq, digest=digest)
        if problem:
            return [Problem("countersigned", problem, source=source)]
    if seq >= len(file.entries) or file.entries[seq].hash != digest:
        return [
            Problem(
                "rollback",
                f"rolled back: the coordinator countersigned {party}'s seq {seq} hash {digest}, "
                + (
                    f"but the ledger ends after {len(file.entries)} entries"
                    if seq >= len(file.entries)
                    else "but the ledger holds another entry at that seq"
                )
                + " (an older snapshot replaced it)",
                source=str(file.path),
                seq=seq,
            )
        ]
    return []


def _ack_problem(obj: dict, directory: Path, *, party: str, seq: int, digest: str) -> str:
    """What is wrong with the coordinator's signature on a countersigned head ("" if nothing)."""
    try:
        signed = dict(obj["coordinator"])
        held = HeldAck(
            party, seq, digest, str(signed["run"]), str(signed["public_key"]), str(signed["sig"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        return f"the coordinator's signature block is malformed ({exc})"
    if not held.valid():
        return (
            f"the coordinator's signature of {party}'s seq {seq} does not verify: the file was "
            "edited after the coordinator signed it"
        )
    pinned = directory / OPERATOR_PUBLIC_KEY_FILE
    if pinned.is_file():
        words = pinned.read_text(encoding="ascii", errors="replace").split()
        if not words or words[0] != held.public_key:
            return (
                f"signed by key {key_label(held.public_key)}, not by the operator key this "
                f"merchant pinned ({pinned}): not its coordinator's acknowledgement"
            )
    return ""


def incomplete_reservations(entries: list[Entry], party: str) -> list[str]:
    """Notes on rounds reserved and never committed or aborted (intact, but INCOMPLETE)."""
    closed = {e.body.get("reserve_seq") for e in entries if e.kind in (COMMIT, ABORT)}
    return [
        f"{party}: round {e.body.get('round')} ({e.body.get('release')}) was reserved at seq "
        f"{e.seq} and never committed: INCOMPLETE (stopped while computing the release); its "
        "epsilon is counted"
        for e in entries
        if e.kind == RESERVE and e.seq not in closed
    ]


def key_label(key: str | None) -> str:
    """A public key as a message names it: its fingerprint, or its start if unreadable."""
    if not key:
        return "(none)"
    try:
        return key_fingerprint(key)
    except ValueError:
        return repr(key[:16])
