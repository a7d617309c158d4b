"""The privacy ledger: an append-only, hash-chained, Ed25519-signed record of releases.

One ledger per party (each merchant; the coordinator keeps the federation's).
A ledger is a JSON Lines file. Entry ``n`` carries ``seq = n``, ``prev`` (the
hash of entry ``n - 1``; 64 zeros for the first), a ``kind``, the signing
``party``, a UTC time ``at``, a ``body`` and ``sig``: the party's Ed25519
signature of the canonical JSON of everything else. The first entry (kind
``genesis``) names the party's public key; every later entry must verify
under it.

Appends are durable: one ``write`` of the whole line on an ``O_APPEND``
descriptor, then ``fsync``. After each append a signed *head* (``seq`` and
hash of the newest entry) is written atomically beside the ledger
(``NAME.head.json``), so removing entries from the end is detectable. A
crash in the middle of a write leaves a *torn* last line (no final newline);
reading reports it, and :meth:`Ledger.open` never drops it silently: it cuts
the torn bytes off and appends a ``repair`` entry that carries them.

This module is the format and the writer; :mod:`common.privacy.verify` checks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import ConfigError
from common.fileio import atomic_write_text
from common.privacy.signing import Signer, verify_signature

LEDGER_FORMAT = "fedrec-ledger/1"
ZERO_HASH = "0" * 64
HEAD_SUFFIX = ".head.json"
# Beside a merchant's ledger: the newest of its entries the coordinator acknowledged holding
# (written by :mod:`client.state.ledger`, checked against rollback by
# :mod:`common.privacy.chain_check`).
COUNTERSIGNED_SUFFIX = ".countersigned.json"

# Entry kinds.
GENESIS = "genesis"
RESERVE = "reserve"  # a DP release is about to be computed; its epsilon is already counted
COMMIT = "commit"  # the release was handed over for sending
REFUSAL = "refusal"  # a release was refused (budget); nothing was sent
ABORT = "abort"  # a reservation that never committed (crash, failure); still counted
NON_DP_RELEASE = "non-dp-release"  # metrics or counts sent in clear
REPAIR = "repair"  # a torn last line, cut off and kept here
MERCHANT_ENTRIES = "merchant-entries"  # coordinator: a merchant's entries as received
ROUND_HEAD = "round-head"  # coordinator: countersigned merchant heads after a round
CLOSE = "close"  # coordinator: the run ended
CLIENT_DP_RELEASE = "client-dp-release"  # coordinator: a noised aggregate (client-level DP)

FIELDS = ("seq", "prev", "kind", "party", "at", "body", "sig")


class LedgerError(ConfigError):
    """A ledger cannot be appended to safely (damaged, or signed by another key)."""


def canonical(obj: Any) -> bytes:
    """The one byte encoding that is hashed and signed (sorted keys, no spaces, no NaN)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def finite(value: float) -> float | None:
    """JSON has no infinity: an unbounded budget is written as ``null``."""
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Entry:
    seq: int
    prev: str
    kind: str
    party: str
    at: str
    body: dict[str, Any]
    sig: str

    def signed_part(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev": self.prev,
            "kind": self.kind,
            "party": self.party,
            "at": self.at,
            "body": self.body,
        }

    def payload(self) -> bytes:
        return canonical(self.signed_part())

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_part(), "sig": self.sig}

    @property
    def hash(self) -> str:
        return hashlib.sha256(canonical(self.to_json())).hexdigest()

    def signature_valid(self, public_key: str) -> bool:
        return verify_signature(public_key, self.payload(), self.sig)

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """Parse one entry; ``ValueError`` names what is missing or mistyped."""
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
        missing = [f for f in FIELDS if f not in obj]
        extra = sorted(set(obj) - set(FIELDS))
        if missing or extra:
            raise ValueError(f"fields missing {missing} / unexpected {extra}")
        types = {"seq": int, "prev": str, "kind": str, "party": str, "at": str, "sig": str}
        for name, kind in types.items():
            if not isinstance(obj[name], kind) or isinstance(obj[name], bool):
                raise ValueError(f"field {name!r} must be {kind.__name__}")
        if not isinstance(obj["body"], dict):
            raise ValueError("field 'body' must be an object")
        return cls(**{f: obj[f] for f in FIELDS})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a ledger: where (file, line, seq), what kind, in words."""

    kind: str  # malformed, torn, sequence, duplicate, chain, signature, genesis, head, ...
    message: str
    source: str = ""
    line: int | None = None
    seq: int | None = None

    def render(self) -> str:
        where = self.source + (f", line {self.line}" if self.line is not None else "")
        entry = f" (entry seq {self.seq})" if self.seq is not None else ""
        return f"{where}{entry}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class Head:
    """A party's signed statement: "my ledger has ``seq + 1`` entries, the newest hashes to ..."."""

    party: str
    seq: int
    hash: str
    public_key: str
    sig: str

    def payload(self) -> bytes:
        return canonical(
            {"format": LEDGER_FORMAT, "party": self.party, "seq": self.seq, "hash": self.hash}
        )

    def signature_valid(self, public_key: str) -> bool:
        return verify_signature(public_key, self.payload(), self.sig)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LEDGER_FORMAT,
            "party": self.party,
            "seq": self.seq,
            "hash": self.hash,
            "public_key": self.public_key,
            "sig": self.sig,
        }


@dataclass
class LedgerFile:
    """A ledger as read from disk: parsed entries, their line numbers, and read problems."""

    path: Path
    entries: list[Entry] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    torn: bytes | None = None  # bytes after the last newline: an interrupted write
    good_length: int = 0  # bytes up to the end of the last complete line
    head: Head | None = None
    head_problem: str | None = None


def head_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + HEAD_SUFFIX)


def countersigned_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".jsonl") + COUNTERSIGNED_SUFFIX)


def read_ledger(path: Path) -> LedgerFile:
    """Parse ``path`` without judging it: malformed lines and a torn tail become problems."""
    result = LedgerFile(path=path)
    raw = path.read_bytes() if path.is_file() else b""
    cut = raw.rfind(b"\n") + 1
    result.good_length = cut
    if cut < len(raw):
        result.torn = raw[cut:]
    source = str(path)
    for number, line in enumerate(raw[:cut].split(b"\n")[:-1], start=1):
        try:
            entry = Entry.from_json(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
            result.problems.append(
                Problem("malformed", f"not a ledger entry ({exc})", source=source, line=number)
            )
            continue
        result.entries.append(entry)
        result.lines.append(number)
    if result.torn is not None:
        result.problems.append(
            Problem(
                "torn",
                f"the last line is incomplete ({len(result.torn)} bytes without a final newline): "
                "a write was interrupted",
                source=source,
                line=raw[:cut].count(b"\n") + 1,
            )
        )
    _read_head(result)
    return result


def _read_head(result: LedgerFile) -> None:
    path = head_path(result.path)
    if not path.is_file():
        result.head_problem = f"no signed head file {path.name}"
        return
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        result.head = Head(
            party=str(obj["party"]),
            seq=int(obj["seq"]),
            hash=str(obj["hash"]),
            public_key=str(obj["public_key"]),
            sig=str(obj["sig"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        result.head_problem = f"head file {path.name} is unreadable ({exc})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Ledger:
    """An open ledger that one party appends to (never rewrites)."""

    def __init__(self, path: Path, *, signer: Signer, party: str, entries: list[Entry]) -> None:
        self.path = path
        self.signer = signer
        self.party = party
        self.entries = entries

    @classmethod
    def open(
        cls, path: Path, *, signer: Signer, party: str, genesis: dict[str, Any] | None = None
    ) -> Ledger:
        """Open (or start) ``party``'s ledger; a torn tail is cut off into a ``repair`` entry."""
        read = read_ledger(path)
        damaged = [p for p in read.problems if p.kind != "torn"]
        if damaged:
            raise LedgerError(
                f"{damaged[0].render()}. Refusing to append to a damaged ledger; check it with "
                f"`fedrec audit verify {path}` and restore it from a backup."
            )
        entries = read.entries
        if entries and entries[0].body.get("public_key") != signer.public_key:
            raise LedgerError(
                f"{path} was started with another signing key than this party's; restore the "
                "matching ledger key, or start a new ledger for a new key."
            )
        ledger = cls(path, signer=signer, party=party, entries=entries)
        if not entries:
            path.parent.mkdir(parents=True, exist_ok=True)
            ledger.append(
                GENESIS,
                {
                    "format": LEDGER_FORMAT,
                    "party": party,
                    "public_key": signer.public_key,
                    **(genesis or {}),
                },
            )
        if read.torn is not None:
            with open(path, "r+b") as handle:
                handle.truncate(read.good_length)
                handle.flush()
                os.fsync(handle.fileno())
            ledger.append(
                REPAIR,
                {
                    "reason": "torn last line (interrupted write) cut off on open",
                    "torn_bytes_b64": base64.b64encode(read.torn).decode("ascii"),
                    "torn_sha256": hashlib.sha256(read.torn).hexdigest(),
                },
            )
        elif entries:
            ledger._write_head()  # a crash between append and head leaves the head one behind
        return ledger

    @property
    def head(self) -> Entry:
        return self.entries[-1]

    def after(self, seq: int) -> list[Entry]:
        """Entries newer than ``seq`` (``-1`` for all)."""
        return self.entries[seq + 1 :]

    def find(self, kind: str, **match: Any) -> list[Entry]:
        return [
            e
            for e in self.entries
            if e.kind == kind and all(e.body.get(k) == v for k, v in match.items())
        ]

    def append(self, kind: str, body: dict[str, Any]) -> Entry:
        prev = self.entries[-1].hash if self.entries else ZERO_HASH
        unsigned = Entry(
            seq=len(self.entries),
            prev=prev,
            kind=kind,
            party=self.party,
            at=_now(),
            body=body,
            sig="",
        )
        entry = Entry(**{**unsigned.to_json(), "sig": self.signer.sign(unsigned.payload())})
        line = canonical(entry.to_json()) + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {self.path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.entries.append(entry)
        self._write_head()
        return entry

    def _write_head(self) -> None:
        newest = self.entries[-1]
        key = self.signer.public_key
        unsigned = Head(party=self.party, seq=newest.seq, hash=newest.hash, public_key=key, sig="")
        head = Head(
            party=self.party,
            seq=newest.seq,
            hash=newest.hash,
            public_key=key,
            sig=self.signer.sign(unsigned.payload()),
        )
        atomic_write_text(head_path(self.path), json.dumps(head.to_json(), indent=2))


def update_digest(arrays: dict[str, npt.NDArray[Any]]) -> str:
    """SHA-256 of a released update: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(canonical([name, str(array.dtype), list(array.shape)]))
        digest.update(array.tobytes())
    return digest.hexdigest()
