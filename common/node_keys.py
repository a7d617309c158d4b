"""SuperNode public keys (EC P-384, OpenSSH format), read and named the same on both sides."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import ConfigError


def load_public_key(path: Path) -> bytes:
    """An OpenSSH EC P-384 public key, checked; returns its canonical bytes."""
    try:
        raw = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"Cannot read the public key {path}: {exc.strerror}.") from exc
    try:
        key = serialization.load_ssh_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an OpenSSH public key ({exc}). Pass the node.key.pub that "
            "`fedrec merchant keygen` wrote."
        ) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise ConfigError(
            f"{path} holds a {type(key).__name__} key; Flower's SuperNode authentication needs "
            "EC P-384. Make one with `fedrec merchant keygen DIR`."
        )
    return key.public_bytes(
        encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH
    )


def fingerprint(public_key: bytes) -> str:
    """SHA-256 of the OpenSSH public key line (first 16 hex digits), for logs and admission."""
    return hashlib.sha256(public_key.strip()).hexdigest()[:16]
