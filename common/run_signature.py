"""The operator's signature over a run: which app, which settings, which run, when.

``fedrec run`` signs every run it submits with the operator's Ed25519 key
(the coordinator's ledger key). The signature travels in the run's own
settings (``run-signature``) as ``BASE64(header).BASE64(signature)``, where the
header is canonical JSON naming

* ``fab-sha256``: the SHA-256 of the Flower App Bundle (what Flower calls the
  FAB hash), so the signature holds only for that exact app;
* ``config-sha256``: the SHA-256 of every other run setting, normalised
  through :func:`common.config.parse_run_config` so both ends hash the same
  typed values whatever TOML or Flower did to their spelling;
* ``run-name`` and ``signed-at`` (UTC), so a record names what was approved.

A merchant verifies the envelope against the key it pinned at enrolment
before anything of the run executes (:mod:`client.deploy.run_guard`). Signing and
verification are the ``cryptography`` package's Ed25519 (through
:mod:`common.privacy.signing`); nothing here imports Flower.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.constants import RUN_SIGNATURE_SETTING
from common.errors import ExitCode, FedrecError
from common.privacy.signing import Signer, key_fingerprint, verify_signature

SIGNATURE_VERSION = 1


class RunRefused(FedrecError):
    """A merchant refuses to execute a run (unsigned, forged, foreign app, or against policy)."""

    exit_code = ExitCode.RUN_REFUSED


@dataclass(frozen=True)
class SignedRun:
    """What the operator's signature vouches for."""

    run_name: str
    signed_at: str  # ISO 8601, UTC
    fab_sha256: str
    config_sha256: str
    operator_key: str  # base64 of the Ed25519 public key that signed

    @property
    def operator_fingerprint(self) -> str:
        return key_fingerprint(self.operator_key)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def config_sha256(run_config: Mapping[str, Any]) -> str:
    """SHA-256 of the run's settings without the signature itself, normalised by fedrec's parser."""
    from common.config import parse_run_config, to_run_config

    settings = {k: v for k, v in run_config.items() if k != RUN_SIGNATURE_SETTING}
    normal = to_run_config(parse_run_config(settings))
    normal.pop(RUN_SIGNATURE_SETTING, None)
    return hashlib.sha256(_canonical(normal)).hexdigest()


def sign_run(
    signer: Signer,
    *,
    run_name: str,
    fab_sha256: str,
    run_config: Mapping[str, Any],
    now: dt.datetime | None = None,
) -> str:
    """The ``run-signature`` value for a run with these settings and this app."""
    header = {
        "version": SIGNATURE_VERSION,
        "run-name": run_name,
        "signed-at": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "fab-sha256": fab_sha256,
        "config-sha256": config_sha256(run_config),
        "operator-key": signer.public_key,
    }
    payload = _canonical(header)
    return base64.b64encode(payload).decode("ascii") + "." + signer.sign(payload)


def verify_run(*, run_config: Mapping[str, Any], fab_sha256: str, pinned_key: str) -> SignedRun:
    """The signed facts of this run, or :class:`RunRefused` saying exactly what does not hold."""
    envelope = str(run_config.get(RUN_SIGNATURE_SETTING, "") or "")
    if not envelope:
        raise RunRefused(
            "the run is not signed by the federation's operator (no run-signature): only runs "
            "submitted with `fedrec run` on the coordinator are executed"
        )
    encoded, _, signature = envelope.partition(".")
    try:
        payload = base64.b64decode(encoded, validate=True)
        header = json.loads(payload)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (binascii.Error, ValueError) as exc:
        raise RunRefused(f"the run's signature is malformed ({exc})") from exc
    if not verify_signature(pinned_key, payload, signature):
        signer = str(header.get("operator-key", ""))
        who = f"key {key_fingerprint(signer)}" if _is_key(signer) else "an unknown key"
        raise RunRefused(
            f"the run's signature does not verify against the operator key pinned at enrolment "
            f"({key_fingerprint(pinned_key)}); it was made by {who} or altered"
        )
    if header.get("version") != SIGNATURE_VERSION:
        raise RunRefused(
            f"run signature version {header.get('version')!r} is not {SIGNATURE_VERSION}; "
            "upgrade fedrec on this merchant"
        )
    if header.get("fab-sha256") != fab_sha256:
        raise RunRefused(
            f"the app bundle (sha256 {fab_sha256[:16]}) is not the one the operator signed "
            f"({str(header.get('fab-sha256'))[:16]})"
        )
    try:
        actual = config_sha256(run_config)
    except FedrecError as exc:
        raise RunRefused(f"the run's settings are not fedrec settings ({exc})") from exc
    if header.get("config-sha256") != actual:
        raise RunRefused("the run's settings differ from the ones the operator signed")
    return SignedRun(
        run_name=str(header.get("run-name", "")),
        signed_at=str(header.get("signed-at", "")),
        fab_sha256=fab_sha256,
        config_sha256=actual,
        operator_key=pinned_key,
    )


def _is_key(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False
