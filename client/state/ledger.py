"""A merchant's privacy ledger: reserve before a release, commit when it is handed over.

Wraps :class:`common.privacy.ledger.Ledger` with the merchant's own signing
key (``ledger.key``, made on first use, never sent) and the entry kinds a
merchant writes:

* ``reserve`` before a DP release is computed (its epsilon is already in the
  privacy account), ``commit`` when the reply carrying it is handed to Flower
  for sending (with the SHA-256 of the released update);
* ``refusal`` when the budget forbids a release; nothing is sent but the reply;
* ``abort`` for a reservation found uncommitted when the ledger is next opened
  (a crash, a kill, a failure while training): its epsilon stays counted;
* ``non-dp-release`` for everything sent in clear (evaluation metrics, a
  non-private update), flagged as not DP.

Beside the ledger it keeps ``ledger.countersigned.json``: the newest of its
entries the coordinator said it holds (``ledger-have`` in an instruction; the
coordinator records those entries in its signed ledger and countersigns them
each round), with the coordinator's signature of that statement
(``ledger-ack``, :mod:`common.privacy.held_ack`). ``fedrec audit verify``
fails a ledger that no longer holds that entry: it was rolled back to an
older snapshot.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.constants import MERCHANT_LEDGER_FILE, MERCHANT_LEDGER_KEY_FILE
from common.fileio import atomic_write_text
from common.privacy.held_ack import HeldAck
from common.privacy.ledger import (
    ABORT,
    COMMIT,
    LEDGER_FORMAT,
    NON_DP_RELEASE,
    REFUSAL,
    RESERVE,
    Entry,
    Ledger,
    canonical,
    countersigned_path,
)
from common.privacy.records import library_versions
from common.privacy.signing import Signer

logger = logging.getLogger(__name__)


class MerchantLedger:
    """One merchant's ledger, opened on first use."""

    def __init__(self, directory: Path, party: str, *, key_path: Path | None = None) -> None:
        self.directory = directory
        self.party = party
        self.key_path = key_path or directory / MERCHANT_LEDGER_KEY_FILE
        self._ledger: Ledger | None = None
        self._countersigned: int | None = None  # seq in ledger.countersigned.json, read once

    @property
    def path(self) -> Path:
        return self.directory / MERCHANT_LEDGER_FILE

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            signer = Signer.load_or_create(self.key_path)
            self._ledger = Ledger.open(
                self.path,
                signer=signer,
                party=self.party,
                genesis={"role": "merchant", "versions": library_versions()},
            )
            self._abort_dangling()
        return self._ledger

    def _abort_dangling(self) -> None:
        ledger = self._ledger
        assert ledger is not None
        closed = {e.body.get("reserve_seq") for e in ledger.entries if e.kind in (COMMIT, ABORT)}
        for entry in [e for e in ledger.entries if e.kind == RESERVE and e.seq not in closed]:
            ledger.append(
                ABORT,
                {
                    "run": entry.body.get("run"),
                    "round": entry.body.get("round"),
                    "release": entry.body.get("release"),
                    "reserve_seq": entry.seq,
                    "reason": "reserved but never committed (the merchant stopped or failed "
                    "while computing the release); its epsilon stays counted",
                },
            )

    def reserve(self, record: dict[str, Any]) -> int:
        return self.ledger.append(RESERVE, record).seq

    def commit(
        self, reserve_seq: int, *, update_sha256: str, non_dp_metrics: dict[str, float]
    ) -> Entry:
        reserved = self.ledger.entries[reserve_seq]
        if reserved.kind != RESERVE:
            raise ValueError(f"ledger entry {reserve_seq} is a {reserved.kind}, not a reservation")
        return self.ledger.append(
            COMMIT,
            {
                **reserved.body,
                "reserve_seq": reserve_seq,
                "update_sha256": update_sha256,
                "non_dp_metrics": non_dp_metrics,
            },
        )

    def refusal(self, record: dict[str, Any], *, reason: str) -> Entry:
        return self.ledger.append(REFUSAL, {**record, "reason": reason})

    def non_dp_release(
        self,
        *,
        run: str,
        server_round: int,
        what: str,
        metrics: dict[str, float],
        update_sha256: str = "",
        released: list[str] | None = None,
        kept_local: list[str] | None = None,
    ) -> Entry:
        body: dict[str, Any] = {
            "run": run,
            "round": server_round,
            "merchant": self.party,
            "release": what,
            "dp": False,
            "non_dp_metrics": metrics,
            "note": "sent in clear: NOT differentially private",
        }
        if update_sha256:
            body |= {
                "update_sha256": update_sha256,
                "released": sorted(released or []),
                "kept_local": sorted(kept_local or []),
            }
        return self.ledger.append(NON_DP_RELEASE, body)

    def lines_after(self, seq: int, *, ack: str = "") -> list[str]:
        """Entries newer than ``seq``, one canonical JSON line each (what a reply carries).

        ``seq`` is the newest entry the coordinator holds (``ack``: its signed statement of
        it): it is kept as countersigned (:meth:`countersigned`) before the reply is built.
        """
        self.countersigned(seq, ack=ack)
        return [canonical(e.to_json()).decode("utf-8") for e in self.ledger.after(seq)]

    def _held(self, ack: str, seq: int) -> HeldAck | None:
        """The coordinator's acknowledgement of entry ``seq``, if it is that and it verifies."""
        if not ack:
            return None
        try:
            held = HeldAck.from_json(ack)
        except ValueError as exc:
            logger.warning("ledger-ack from the coordinator is unreadable (%s); not kept", exc)
            return None
        entries = self.ledger.entries
        if (
            held.party != self.party
            or held.seq != seq
            or held.hash != entries[seq].hash
            or not held.valid()
        ):
            logger.warning(
                "ledger-ack from the coordinator does not acknowledge %s's entry seq %d as this "
                "ledger holds it, or its signature fails; kept unsigned",
                self.party,
                seq,
            )
            return None
        return held

    def countersigned(self, seq: int, *, ack: str = "") -> None:
        """Keep entry ``seq`` (the coordinator holds it) beside the ledger, if it is newer,
        with the coordinator's signature when ``ack`` carries a valid one."""
        entries = self.ledger.entries
        if self._countersigned is None:
            try:
                stored = json.loads(countersigned_path(self.path).read_text(encoding="utf-8"))
                self._countersigned = int(stored["seq"])
            except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                self._countersigned = -1
        if not self._countersigned < seq < len(entries):
            return
        record = {
            "format": LEDGER_FORMAT,
            "party": entries[0].party,
            "seq": seq,
            "hash": entries[seq].hash,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "meaning": "the coordinator holds this party's entries through seq (ledger-have)",
        }
        held = self._held(ack, seq)
        if held is not None:
            record["coordinator"] = {
                "run": held.run,
                "public_key": held.public_key,
                "sig": held.sig,
            }
        atomic_write_text(countersigned_path(self.path), json.dumps(record, indent=2))
        self._countersigned = seq
