"""The federation ledger: merchants' signed entries as received, countersigned each round.

The coordinator keeps its own signed, hash-chained ledger
(:class:`common.privacy.ledger.Ledger`, party ``coordinator``) in the run
directory. Every instruction tells a merchant the newest of its entries the
coordinator already holds (``ledger-have``), signed (``ledger-ack``,
:mod:`common.privacy.held_ack`: the merchant keeps it against rollback); the
merchant's reply carries the newer ones. The coordinator checks them on
arrival (contiguous, chained, signed by the key in the merchant's genesis
entry, and a committed update's hash equal to the hash of the arrays
actually received), records them
verbatim (``merchant-entries``), and after each round records every merchant's
head (``round-head``): its countersignature. An update the coordinator left out
of the model (non-finite, too large, a bad weight: :mod:`server.rounds.update_bounds`)
is recorded with its reason (``update-rejected``), and under client-level DP
each noised aggregate the coordinator computed (``client-dp-release``), with
its noise, its sizes and the cumulative epsilon. ``close`` ends a run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.constants import (
    ARRAYS_KEY,
    COORDINATOR_KEY_FILE,
    FEDERATION_LEDGER_FILE,
    ITEM_COUNTS_KEY,
    LEDGER_ACK,
    LEDGER_ENTRIES_FIELD,
    LEDGER_HAVE,
    LEDGER_HEAD,
    LEDGER_KEY,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
)
from common.privacy.held_ack import HeldAck
from common.privacy.ledger import (
    CLIENT_DP_RELEASE,
    CLOSE,
    COMMIT,
    GENESIS,
    MERCHANT_ENTRIES,
    ROUND_HEAD,
    Entry,
    Ledger,
    update_digest,
)
from common.privacy.records import library_versions
from common.privacy.signing import Signer

if TYPE_CHECKING:
    from flwr.app import Message

logger = logging.getLogger(f"flwr.fedrec.{__name__}")

COORDINATOR = "coordinator"
UPDATE_REJECTED = "update-rejected"  # coordinator: an update (or aggregate) left out of the model
MERCHANT_SCOPE = "merchant"  # a rejected update is one merchant's
AGGREGATE_SCOPE = "aggregate"  # ... or a round's aggregate (SecAgg+ or the strategy's)


def _arrays_of(message: Message) -> dict[str, Any] | None:
    records = message.content.array_records
    for key in (ARRAYS_KEY, ITEM_COUNTS_KEY):
        if key in records:
            return {n: t.numpy() for n, t in records[key].to_torch_state_dict().items()}
    return None


class FederationLedger:
    """The coordinator's view of every merchant's ledger, in one signed chain."""

    def __init__(self, directory: Path, *, run: str, key_path: Path | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        signer = Signer.load_or_create(key_path or directory / COORDINATOR_KEY_FILE)
        self.signer = signer
        self.ledger = Ledger.open(
            directory / FEDERATION_LEDGER_FILE,
            signer=signer,
            party=COORDINATOR,
            genesis={"role": "coordinator", "run": run, "versions": library_versions()},
        )
        self.run = run
        self.chains: dict[str, list[Entry]] = {}  # merchant -> its entries, as received
        self.node_of: dict[int, str] = {}
        for entry in self.ledger.find(MERCHANT_ENTRIES):  # resuming: rebuild what we hold
            name = str(entry.body["merchant"])
            self.chains.setdefault(name, []).extend(
                Entry.from_json(e) for e in entry.body["entries"]
            )
            self.node_of[int(entry.body["node"])] = name

    # --- instructions ---------------------------------------------------------------
    def have(self, node: int) -> int:
        name = self.node_of.get(node)
        return len(self.chains.get(name, [])) - 1 if name is not None else -1

    def ack(self, node: int) -> str:
        """The signed statement of what ``have`` says ("" when nothing is held)."""
        name = self.node_of.get(node)
        chain = self.chains.get(name, []) if name is not None else []
        if name is None or not chain:
            return ""
        held = HeldAck(party=name, seq=chain[-1].seq, hash=chain[-1].hash, run=self.run)
        return held.signed(self.signer).to_text()

    def instruct(self, messages: list[Message]) -> list[Message]:
        """Tell each merchant what the coordinator holds (signed) and its newest head."""
        from flwr.app import ConfigRecord, RecordDict

        head = self.ledger.head
        for message in messages:
            node = message.metadata.dst_node_id
            content = RecordDict(dict(message.content.items()))  # Flower shares one per round
            content[LEDGER_KEY] = ConfigRecord(
                {  # type: ignore[arg-type]
                    LEDGER_HAVE: self.have(node),
                    LEDGER_ACK: self.ack(node),
                    LEDGER_HEAD: f"{head.seq}:{head.hash}",
                }
            )
            message.content = content
        return messages

    # --- receipt ----------------------------------------------------------------------
    def record(self, replies: list[Message], *, server_round: int, phase: str) -> None:
        """Check and record the entries each reply carries."""
        for reply in replies:
            self._record_one(reply, server_round=server_round, phase=phase)

    def _record_one(self, reply: Message, *, server_round: int, phase: str) -> None:
        content = reply.content
        if LEDGER_KEY not in content.config_records or MERCHANT_KEY not in content.config_records:
            return
        name = str(content.config_records[MERCHANT_KEY][MERCHANT_NAME_FIELD])
        node = reply.metadata.src_node_id
        raw = content.config_records[LEDGER_KEY].get(LEDGER_ENTRIES_FIELD, [])
        chain = self.chains.setdefault(name, [])
        fresh: list[Entry] = []
        problems: list[str] = []
        for line in raw if isinstance(raw, list) else []:
            try:
                entry = Entry.from_json(json.loads(str(line)))
            except (json.JSONDecodeError, ValueError) as exc:
                problems.append(f"unreadable entry ({exc})")
                continue
            known = chain + fresh
            if entry.seq < len(known):
                if known[entry.seq].hash != entry.hash:
                    problems.append(f"entry seq {entry.seq} differs from the one already held")
                continue  # a resend of what we hold
            problems += _check_next(known, entry)
            fresh.append(entry)
        arrays = _arrays_of(reply)
        received = update_digest(arrays) if arrays is not None else ""
        for entry in fresh:
            if entry.kind == COMMIT and received and entry.body.get("update_sha256") != received:
                problems.append(
                    f"entry seq {entry.seq} commits update {entry.body.get('update_sha256')} "
                    f"but the arrays received hash to {received}"
                )
        for problem in problems:
            logger.warning("ledger of %s (round %d, %s): %s", name, server_round, phase, problem)
        if not fresh and not problems:
            return
        chain.extend(fresh)
        self.node_of[node] = name
        self.ledger.append(
            MERCHANT_ENTRIES,
            {
                "merchant": name,
                "node": node,
                "round": server_round,
                "phase": phase,
                "received_update_sha256": received,
                "entries": [e.to_json() for e in fresh],
                "problems": problems,
            },
        )

    def reject(
        self,
        *,
        server_round: int,
        reason: str,
        merchant: str = "",
        node: int = -1,
    ) -> Entry:
        """Record a merchant's update (no merchant: a round's aggregate) left out of the model."""
        return self.ledger.append(
            UPDATE_REJECTED,
            {
                "run": self.run,
                "round": server_round,
                "scope": MERCHANT_SCOPE if merchant else AGGREGATE_SCOPE,
                "merchant": merchant,
                "node": node,
                "reason": reason,
            },
        )

    def client_release(self, *, server_round: int, spent: dict[str, Any], published: bool) -> Entry:
        """A noised aggregate computed under client-level DP (``spent``: ``ClientDP.spent``).

        Recorded whether or not it became the global model: the noise was drawn and the
        accountant composed it either way.
        """
        return self.ledger.append(
            CLIENT_DP_RELEASE,
            {
                "run": self.run,
                "round": server_round,
                "published": published,
                "noise_multiplier": spent["noise_multiplier"],
                "clipping_norm": spent["clipping_norm"],
                "sample_size": spent["sampled_per_round"],
                "population_size": spent["population"],
                "releases": spent["releases"],
                "epsilon": spent["epsilon"],
                "delta": spent["delta"],
                "unit": spent["unit"],
                "accountant": spent["accountant"],
                "sampling": "none: every client counted in every release (no amplification)",
                "adjacency": "add or remove one client",
            },
        )

    def client_releases(self) -> list[dict[str, Any]]:
        """This run's recorded client-level DP releases, in order."""
        return [e.body for e in self.ledger.find(CLIENT_DP_RELEASE, run=self.run)]

    def countersign(self, server_round: int) -> Entry:
        heads = {
            name: {"seq": chain[-1].seq, "hash": chain[-1].hash}
            for name, chain in sorted(self.chains.items())
            if chain
        }
        return self.ledger.append(
            ROUND_HEAD, {"run": self.run, "round": server_round, "heads": heads}
        )

    def close(self, *, rounds: int, stopped_early: str) -> Entry:
        return self.ledger.append(
            CLOSE, {"run": self.run, "rounds": rounds, "stopped_early": stopped_early}
        )


def _check_next(known: list[Entry], entry: Entry) -> list[str]:
    """Problems with ``entry`` as the next of ``known`` (contiguous, chained, signed)."""
    if entry.seq != len(known):
        return [f"entry seq {entry.seq} arrived, expected {len(known)} (a gap)"]
    if not known:
        if entry.kind != GENESIS or "public_key" not in entry.body:
            return ["the first entry is not a genesis entry naming the merchant's key"]
        key = str(entry.body["public_key"])
    else:
        if entry.prev != known[-1].hash:
            return [f"entry seq {entry.seq} does not chain to seq {entry.seq - 1}"]
        key = str(known[0].body.get("public_key"))
    if not entry.signature_valid(key):
        return [f"entry seq {entry.seq} is not signed by the merchant's key"]
    return []
