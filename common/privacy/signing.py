"""Ed25519 signing keys for ledgers, with the ``cryptography`` package (no home-made crypto).

A party's private key lives in one PEM file on its own disk (mode 0600,
written atomically, made on first use). Public keys travel as base64 of the
32 raw bytes, so a ledger entry can name the key that signs its chain.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from common.errors import ConfigError
from common.fileio import atomic_write_bytes


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


class Signer:
    """One party's Ed25519 key: it signs that party's ledger entries and heads."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(
            encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
        )
        self.public_key = _b64(raw)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """The key in ``path``; a new one is generated and saved (0600) if there is none."""
        if not path.is_file():
            signer = cls.generate()
            pem = signer._key.private_bytes(
                encoding=serialization.Encoding.PEM,
                format=serialization.PrivateFormat.PKCS8,
                encryption_algorithm=serialization.NoEncryption(),
            )
            atomic_write_bytes(path, pem)
            os.chmod(path, 0o600)
            return signer
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path}: not a readable PEM private key ({exc}). Restore the ledger key "
                "from a backup; a new key would not match the ledger it signed."
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(
                f"{path}: expected an Ed25519 private key, found {type(key).__name__}."
            )
        return cls(key)

    def sign(self, payload: bytes) -> str:
        return _b64(self._key.sign(payload))


def key_fingerprint(public_key: str) -> str:
    """A short, stable name for a public key (SHA-256 of its raw bytes, 16 hex digits)."""
    return hashlib.sha256(base64.b64decode(public_key)).hexdigest()[:16]


def verify_signature(public_key: str, payload: bytes, signature: str) -> bool:
    """True when ``signature`` (base64) is ``public_key``'s Ed25519 signature of ``payload``."""
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(base64.b64decode(signature, validate=True), payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
