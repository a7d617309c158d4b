"""Whose ledger a merchant file is: bound by the coordinator's copies, never by file names.

A merchant file is accepted only for a party the coordinator recorded,
signed by the key that party's genesis (as the coordinator received it)
names, in a directory of that party's name, and one file per party. A
shadow ledger re-signed with a fresh key under a recorded party's name
fails, naming the file and the party. A file that speaks for its party must
hold exactly the entries the coordinator recorded (a merchant file missing
entries the coordinator recorded was cut, or rolled back with its
countersigned head).
"""

from __future__ import annotations

from pathlib import Path

from common.privacy.chain_check import ChainCheck, key_label
from common.privacy.ledger import Entry, LedgerFile, Problem


def claimed_party(file: LedgerFile) -> str | None:
    """The party a ledger file says it belongs to: its genesis, else its signed head."""
    if file.entries:
        return file.entries[0].party
    return file.head.party if file.head is not None else None


def identity_problems(
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
                f"party {party!r} is signed here by key {key_label(check.public_key)}, "
                f"but the genesis the coordinator recorded for {party!r} names key "
                f"{key_label(keys.get(party))}: a ledger made with another key",
                source=source,
            )
        )
    return problems


def compare_with_recorded(merchant: LedgerFile, recorded: list[Entry]) -> list[Problem]:
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


def duplicate_parties(claimed: dict[str, list[Path]]) -> list[Problem]:
    """One party keeps one ledger: name every party that more than one file claims."""
    return [
        Problem(
            "duplicate-party",
            f"{len(paths)} files claim party {party!r}: "
            + ", ".join(str(p) for p in paths)
            + "; one party keeps one ledger",
            source=str(paths[-1]),
        )
        for party, paths in sorted(claimed.items())
        if len(paths) > 1
    ]
