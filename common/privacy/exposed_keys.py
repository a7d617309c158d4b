"""Signing keys left inside a directory whose ledgers they sign.

A ledger is evidence only against someone who cannot re-sign it. A run
directory that also holds a party's private key (an old simulation kept
``coordinator.key`` and ``merchants/*/ledger.key`` there) can be rewritten and
re-signed consistently by anyone given the directory, and verification would
pass. :func:`exposed_keys` finds every Ed25519 private key file under a
directory whose public key signs one of the ledgers verified there.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.privacy.ledger import Problem
from common.privacy.signing import key_fingerprint

_PEM = b"-----BEGIN PRIVATE KEY-----"
_MAX_KEY_BYTES = 4096  # a PEM Ed25519 key is 119 bytes; larger files are not keys


def _public_key(path: Path) -> str | None:
    """The base64 raw public key of an Ed25519 PEM private key file, else ``None``."""
    import base64

    try:
        if path.stat().st_size > _MAX_KEY_BYTES:
            return None
        raw = path.read_bytes()
        if not raw.lstrip().startswith(_PEM):
            return None
        key = serialization.load_pem_private_key(raw, password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, Ed25519PrivateKey):
        return None
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return base64.b64encode(public).decode("ascii")


def exposed_keys(directory: Path, parties: dict[str, str]) -> list[Problem]:
    """A problem for each private key under ``directory`` that signs a party's ledger.

    ``parties``: party name -> the public key its genesis names.
    """
    owner = {key: party for party, key in parties.items() if key}
    problems = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
        public = _public_key(path)
        if public is None or public not in owner:
            continue
        problems.append(
            Problem(
                "exposed-key",
                f"this is the private signing key of party {owner[public]!r} (key "
                f"{key_fingerprint(public)}), inside the directory whose ledgers it signs: "
                "anyone holding the directory can rewrite and re-sign them, so they prove "
                "nothing. Keep signing keys off published directories (fedrec simulate keeps "
                "them in a temporary directory removed when the run ends).",
                source=str(path),
            )
        )
    return problems
