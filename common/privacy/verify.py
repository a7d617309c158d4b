"""Verify ledgers without trusting anyone: chains, signatures, signed heads, countersignatures.

``verify_path`` takes a run directory (the federation ledger plus every
merchant ledger under ``merchants/``), a federation ledger, or one merchant
ledger, and returns a :class:`Verdict`: every problem found (the first bad
entry comes first, with its file, line, seq and the kind of problem), and
notes on what is incomplete but intact (a round reserved and never
committed, a run that did not close).

What is checked, for every ledger file:

* each line is a complete entry (a torn last line is a problem, not skipped);
* entry ``n`` has ``seq == n`` (duplicates and reorderings are named) and
  ``prev`` equal to the hash of entry ``n - 1``;
* the first entry is a genesis naming the party's public key, and every
  entry's Ed25519 signature verifies under it;
* the signed head beside the file verifies and names an entry present with
  that hash (entries removed from the end are detected).

Across files: the coordinator's copies of each merchant's entries form a
valid chain under the merchant's key, every countersigned round head names
an entry of that chain, and each merchant's own file holds exactly those
entries (a merchant file missing entries the coordinator recorded was cut).

Limit, stated plainly: a party holding its own key can rewrite its whole
ledger and head consistently; only copies held by others (the federation
ledger for merchants, merchants' records for the coordinator) expose that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from common.constants import (
    FEDERATION_LEDGER_FILE,
    MERCHANT_LEDGER_FILE,
    MERCHANTS_DIR,
    RUN_LEDGER_DIR,
)
from common.errors import ConfigError
from common.privacy.ledger import (
    ABORT,
    CLOSE,
    COMMIT,
    GENESIS,
    MERCHANT_ENTRIES,
    RESERVE,
    ROUND_HEAD,
    ZERO_HASH,
    Entry,
    LedgerFile,
    Problem,
    read_ledger,
)


@dataclass
class ChainCheck:
    """One party's chain: who, with which key, and what is wrong with it."""

    party: str | None
    public_key: str | None
    entries: list[Entry]
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Verdict:
    """The outcome of ``fedrec audit verify``."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parties: dict[str, int] = field(default_factory=dict)  # party -> entries verified

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None


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


def _verify_file(file: LedgerFile, verdict: Verdict) -> ChainCheck:
    check = check_chain(file.entries, source=str(file.path), lines=file.lines)
    problems = file.problems + check.problems + check_head(file, check)
    verdict.problems += sorted(problems, key=lambda p: (p.line or 10**9, p.seq or 0))
    verdict.parties[check.party or str(file.path)] = len(file.entries)
    verdict.notes += _incomplete_reservations(file.entries, check.party or str(file.path))
    return check


def _incomplete_reservations(entries: list[Entry], party: str) -> list[str]:
    closed = {e.body.get("reserve_seq") for e in entries if e.kind in (COMMIT, ABORT)}
    return [
        f"{party}: round {e.body.get('round')} ({e.body.get('release')}) was reserved at seq "
        f"{e.seq} and never committed: INCOMPLETE (stopped while computing the release); its "
        "epsilon is counted"
        for e in entries
        if e.kind == RESERVE and e.seq not in closed
    ]


def verify_merchant(path: Path) -> Verdict:
    verdict = Verdict(path=path)
    _verify_file(read_ledger(path), verdict)
    return verdict


def verify_federation(path: Path, merchant_files: dict[str, Path] | None = None) -> Verdict:
    """The federation ledger, the merchant chains inside it, and merchants' own files."""
    verdict = Verdict(path=path)
    fed = read_ledger(path)
    _verify_file(fed, verdict)
    chains: dict[str, list[Entry]] = {}
    for entry in fed.entries:
        if entry.kind != MERCHANT_ENTRIES:
            continue
        name = str(entry.body.get("merchant"))
        for raw in entry.body.get("entries", []):
            try:
                chains.setdefault(name, []).append(Entry.from_json(raw))
            except ValueError as exc:
                verdict.problems.append(
                    Problem("malformed", f"a recorded entry of {name}: {exc}", source=str(path))
                )
    keys: dict[str, str | None] = {}
    for name, chain in sorted(chains.items()):
        check = check_chain(chain, source=f"{path} (entries of {name} as received)")
        verdict.problems += check.problems
        keys[name] = check.public_key
    for entry in fed.entries:
        if entry.kind != ROUND_HEAD:
            continue
        for name, head in entry.body.get("heads", {}).items():
            chain = chains.get(name, [])
            seq = int(head.get("seq", -1))
            if not 0 <= seq < len(chain) or chain[seq].hash != head.get("hash"):
                verdict.problems.append(
                    Problem(
                        "countersign",
                        f"round {entry.body.get('round')} countersigns {name}'s entry seq {seq}, "
                        "which the recorded chain does not hold with that hash",
                        source=str(path),
                        seq=entry.seq,
                    )
                )
    if fed.entries and fed.entries[-1].kind != CLOSE:
        rounds = [e.body.get("round") for e in fed.entries if e.kind == ROUND_HEAD]
        last = rounds[-1] if rounds else "none"
        verdict.notes.append(
            f"the run did not close: INCOMPLETE after countersigned round {last} "
            "(the coordinator stopped, or the run is still going)"
        )
    for name, file_path in sorted((merchant_files or {}).items()):
        merchant = read_ledger(file_path)
        check = _verify_file(merchant, verdict)
        recorded = chains.get(name, [])
        if recorded and check.public_key != keys.get(name):
            verdict.problems.append(
                Problem(
                    "key",
                    "signed by another key than the one the coordinator recorded",
                    source=str(file_path),
                )
            )
        for entry in recorded:
            if entry.seq >= len(merchant.entries):
                verdict.problems.append(
                    Problem(
                        "truncated",
                        f"the coordinator recorded entry seq {entry.seq} but this file ends after "
                        f"{len(merchant.entries)} entries: entries were removed",
                        source=str(file_path),
                        seq=entry.seq,
                    )
                )
                break
            if merchant.entries[entry.seq].hash != entry.hash:
                verdict.problems.append(
                    Problem(
                        "mismatch",
                        "differs from the entry the coordinator recorded",
                        source=str(file_path),
                        line=merchant.lines[entry.seq] if entry.seq < len(merchant.lines) else None,
                        seq=entry.seq,
                    )
                )
                break
    return verdict


def verify_path(path: Path) -> Verdict:
    """Verify a run directory, a federation ledger or a merchant ledger."""
    if path.is_dir():
        federation = path / RUN_LEDGER_DIR / FEDERATION_LEDGER_FILE
        merchants = {
            p.parent.name: p
            for p in sorted((path / MERCHANTS_DIR).glob(f"*/{MERCHANT_LEDGER_FILE}"))
        }
        if federation.is_file():
            return verify_federation(federation, merchants)
        if (path / MERCHANT_LEDGER_FILE).is_file():
            return verify_merchant(path / MERCHANT_LEDGER_FILE)
        raise ConfigError(
            f"{path}: no ledger found (expected {RUN_LEDGER_DIR}/{FEDERATION_LEDGER_FILE} in a "
            f"run directory, or {MERCHANT_LEDGER_FILE} in a merchant directory)."
        )
    if not path.is_file():
        raise ConfigError(f"{path}: no such ledger file.")
    first = read_ledger(path)
    role = first.entries[0].body.get("role") if first.entries else None
    if role == "coordinator":
        merchants_dir = path.parent.parent / MERCHANTS_DIR
        merchants = {
            p.parent.name: p for p in sorted(merchants_dir.glob(f"*/{MERCHANT_LEDGER_FILE}"))
        }
        return verify_federation(path, merchants)
    return verify_merchant(path)
