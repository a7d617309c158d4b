"""The coordinator's signed acknowledgement of a merchant's ledger head.

With every instruction the coordinator tells a merchant the newest of its
entries it holds (``ledger-have``) and signs that statement with its ledger
key: *party P's entries through seq S, the newest hashing to H, are held by
the coordinator of run R* (``ledger-ack``). The merchant keeps the newest
such acknowledgement beside its ledger (``ledger.countersigned.json``).
``fedrec audit verify`` of the merchant's state then holds evidence it could
not have made itself: a ledger rolled back below S, or holding another entry
at S, fails; an acknowledgement edited by hand fails its signature; one
signed by any key other than the operator key the merchant pinned at
enrolment (``operator.pub``) fails too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from common.privacy.ledger import canonical
from common.privacy.signing import Signer, verify_signature

STATEMENT = "the coordinator holds this party's ledger entries through seq"


@dataclass(frozen=True)
class HeldAck:
    party: str
    seq: int
    hash: str
    run: str
    public_key: str = ""
    sig: str = ""

    def payload(self) -> bytes:
        return canonical(
            {
                "statement": STATEMENT,
                "party": self.party,
                "seq": self.seq,
                "hash": self.hash,
                "run": self.run,
            }
        )

    def signed(self, signer: Signer) -> HeldAck:
        return HeldAck(
            self.party,
            self.seq,
            self.hash,
            self.run,
            signer.public_key,
            signer.sign(self.payload()),
        )

    def valid(self) -> bool:
        return bool(self.public_key and self.sig) and verify_signature(
            self.public_key, self.payload(), self.sig
        )

    def to_text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, obj: Any) -> HeldAck:
        """From a dict (or a JSON text); ``ValueError`` if it is not one."""
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        try:
            return cls(
                party=str(obj["party"]),
                seq=int(obj["seq"]),
                hash=str(obj["hash"]),
                run=str(obj["run"]),
                public_key=str(obj.get("public_key", "")),
                sig=str(obj.get("sig", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"missing or malformed field ({exc})") from exc
