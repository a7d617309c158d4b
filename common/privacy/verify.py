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

Along every merchant chain, cumulative epsilon never decreases and each
recorded figure equals what its reserved events give
(:mod:`common.privacy.epsilon_check`); along the federation ledger, each
client-level DP release is counted and its epsilon recomputed
(:mod:`common.privacy.client_release_check`).

Across files: the coordinator's copies of each merchant's entries form a
valid chain under the merchant's key, every countersigned round head names
an entry of that chain, and each merchant's own file holds exactly those
entries (a merchant file missing entries the coordinator recorded was cut).
Identities are bound by the coordinator's copies, never by file names: a
merchant file is accepted only for a party the coordinator recorded, signed
by the key that party's genesis (as the coordinator received it) names, in a
directory of that party's name, and one file per party. A shadow ledger
re-signed with a fresh key under a recorded party's name fails, naming the
file and the party.

Rollback: a merchant keeps, beside its ledger, the newest of its entries the
coordinator acknowledged holding (``ledger.countersigned.json``, written by
:mod:`client.ledger`, with the coordinator's signature of that statement,
:mod:`common.privacy.held_ack`, checked against the operator key the
merchant pinned; the coordinator records those entries in its signed
ledger and countersigns them at the round's end). A ledger shorter than that
entry, or holding another entry at its seq, was rolled back to an older
snapshot. A snapshot that rolls that file back too is caught only against the
coordinator's copy (verify the run directory).

A run directory must not hold the private key of any party whose ledger it
carries (:mod:`common.privacy.exposed_keys`): with the key, anyone holding
the directory could re-sign it.

Limit, stated plainly: a party holding its own key can rewrite its whole
ledger and head consistently; only copies held by others (the federation
ledger for merchants, merchants' records for the coordinator) expose that.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.constants import (
    FEDERATION_LEDGER_FILE,
    MERCHANT_LEDGER_FILE,
    MERCHANTS_DIR,
    OPERATOR_PUBLIC_KEY_FILE,
    RUN_LEDGER_DIR,
)
from common.errors import ConfigError
from common.privacy.client_release_check import check_client_releases
from common.privacy.epsilon_check import EpsilonReplay, check_epsilons
from common.privacy.exposed_keys import exposed_keys
from common.privacy.held_ack import HeldAck
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
    countersigned_path,
    read_ledger,
)
from common.privacy.signing import key_fingerprint


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
    keys: dict[str, str] = field(default_factory=dict)  # party -> public key of its genesis

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


def _verify_file(
    file: LedgerFile, verdict: Verdict, replay: EpsilonReplay | None = None
) -> ChainCheck:
    check = check_chain(file.entries, source=str(file.path), lines=file.lines)
    problems = file.problems + check.problems + check_head(file, check)
    if replay is not None and not check.problems:
        epsilons = check_epsilons(
            file.entries, source=str(file.path), replay=replay, lines=file.lines
        )
        problems += epsilons.problems
        verdict.notes += epsilons.notes
    problems += check_countersigned(file, check)
    verdict.problems += sorted(problems, key=lambda p: (p.line or 10**9, p.seq or 0))
    verdict.parties[check.party or str(file.path)] = len(file.entries)
    if check.party and check.public_key:
        verdict.keys.setdefault(check.party, check.public_key)
    verdict.notes += _incomplete_reservations(file.entries, check.party or str(file.path))
    return check


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
                f"signed by key {_fingerprint(held.public_key)}, not by the operator key this "
                f"merchant pinned ({pinned}): not its coordinator's acknowledgement"
            )
    return ""


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
    _verify_file(read_ledger(path), verdict, EpsilonReplay())
    return verdict


def _recorded_chains(fed: LedgerFile, verdict: Verdict) -> dict[str, list[Entry]]:
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
                    Problem("malformed", f"a recorded entry of {name}: {exc}", source=str(fed.path))
                )
    return chains


def verify_federation(
    path: Path, merchant_files: Sequence[Path] = (), *, directory_names: bool = True
) -> Verdict:
    """The federation ledger, the merchant chains inside it, and merchants' own files.

    ``directory_names``: each merchant file must sit in a directory named after
    its party (a run directory's ``merchants/NAME/``).
    """
    verdict = Verdict(path=path)
    replay = EpsilonReplay()
    fed = read_ledger(path)
    if not _verify_file(fed, verdict).problems:
        verdict.problems += check_client_releases(fed.entries, source=str(path), lines=fed.lines)
    chains = _recorded_chains(fed, verdict)
    keys: dict[str, str | None] = {}
    for name, chain in sorted(chains.items()):
        source = f"{path} (entries of {name} as received)"
        check = check_chain(chain, source=source)
        verdict.problems += check.problems
        if check.party is not None and check.party != name:
            verdict.problems.append(
                Problem(
                    "party",
                    f"the coordinator recorded these entries as {name!r}'s, but their genesis "
                    f"names party {check.party!r}",
                    source=source,
                )
            )
        if not check.problems:
            epsilons = check_epsilons(chain, source=source, replay=replay)
            verdict.problems += epsilons.problems
            verdict.notes += epsilons.notes
        keys[name] = check.public_key
        if check.public_key:
            verdict.keys.setdefault(name, check.public_key)
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
    claimed: dict[str, list[Path]] = {}
    for file_path in sorted(merchant_files):
        merchant = read_ledger(file_path)
        party = _claimed_party(merchant)
        start = len(verdict.problems)
        check = _verify_file(merchant, verdict, replay)
        if party is None:
            continue  # check_chain named the missing genesis
        claimed.setdefault(party, []).append(file_path)
        # Who signed a file comes before what it says: its identity problems go first.
        verdict.problems[start:start] = _identity_problems(
            merchant, party, check, chains, keys, directory_names=directory_names
        )
        if party in chains and check.public_key == keys.get(party):
            verdict.problems += _compare_with_recorded(merchant, chains[party])
    for party, paths in sorted(claimed.items()):
        if len(paths) > 1:
            verdict.problems.append(
                Problem(
                    "duplicate-party",
                    f"{len(paths)} files claim party {party!r}: "
                    + ", ".join(str(p) for p in paths)
                    + "; one party keeps one ledger",
                    source=str(paths[-1]),
                )
            )
    return verdict


def _identity_problems(
    merchant: LedgerFile,
    party: str,
    check: ChainCheck,
    chains: dict[str, list[Entry]],
    keys: dict[str, str | None],
    *,
    directory_names: bool,
) -> list[Problem]:
    """A merchant file speaks for a party the coordinator recorded, under that party's key."""
    source = str(merchant.path)
    problems: list[Problem] = []
    if directory_names and merchant.path.parent.name != party:
        problems.append(
            Problem(
                "directory",
                f"this file is in directory {merchant.path.parent.name!r} but its ledger "
                f"belongs to party {party!r}",
                source=source,
            )
        )
    if party not in chains:
        problems.append(
            Problem(
                "unknown-party",
                f"party {party!r} is not one the coordinator recorded (it recorded: "
                f"{', '.join(sorted(chains)) or 'none'}); its entries are not accepted",
                source=source,
            )
        )
    elif check.public_key != keys.get(party):
        problems.append(
            Problem(
                "key",
                f"party {party!r} is signed here by key {_fingerprint(check.public_key)}, "
                f"but the genesis the coordinator recorded for {party!r} names key "
                f"{_fingerprint(keys.get(party))}: a ledger made with another key",
                source=source,
            )
        )
    return problems


def _claimed_party(file: LedgerFile) -> str | None:
    if file.entries:
        return file.entries[0].party
    return file.head.party if file.head is not None else None


def _fingerprint(key: str | None) -> str:
    if not key:
        return "(none)"
    try:
        return key_fingerprint(key)
    except ValueError:
        return repr(key[:16])


def _compare_with_recorded(merchant: LedgerFile, recorded: list[Entry]) -> list[Problem]:
    """A merchant's own file must hold exactly the entries the coordinator recorded."""
    source = str(merchant.path)
    for entry in recorded:
        if entry.seq >= len(merchant.entries):
            return [
                Problem(
                    "truncated",
                    f"the coordinator recorded entry seq {entry.seq} but this file ends after "
                    f"{len(merchant.entries)} entries: entries were removed",
                    source=source,
                    seq=entry.seq,
                )
            ]
        if merchant.entries[entry.seq].hash != entry.hash:
            return [
                Problem(
                    "mismatch",
                    "differs from the entry the coordinator recorded",
                    source=source,
                    line=merchant.lines[entry.seq] if entry.seq < len(merchant.lines) else None,
                    seq=entry.seq,
                )
            ]
    return []


def _merchant_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / MERCHANTS_DIR).glob(f"*/{MERCHANT_LEDGER_FILE}"))


def verify_path(path: Path) -> Verdict:
    """Verify a run directory, a federation ledger or a merchant ledger."""
    if path.is_dir():
        federation = path / RUN_LEDGER_DIR / FEDERATION_LEDGER_FILE
        if federation.is_file():
            verdict = verify_federation(federation, _merchant_files(path))
            verdict.problems += exposed_keys(path, verdict.keys)
            return verdict
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
        return verify_federation(path, _merchant_files(path.parent.parent))
    return verify_merchant(path)
