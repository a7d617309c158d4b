"""The merchant's node key: how the coordinator recognises an admitted SuperNode.

Flower's SuperNode authentication uses an EC P-384 key pair in OpenSSH
format. ``fedrec merchant keygen DIR`` writes ``DIR/node.key`` (private,
mode 0600, never leaves the merchant) and ``DIR/node.key.pub`` (sent to the
coordinator operator, who admits it). Made with the ``cryptography`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.errors import ConfigError
from common.fileio import atomic_write_bytes
from common.node_keys import fingerprint, load_public_key

__all__ = ["check_private_key", "fingerprint", "generate_node_key", "load_public_key"]

PRIVATE_KEY_FILE = "node.key"
PUBLIC_KEY_FILE = "node.key.pub"


def generate_node_key(directory: Path, *, overwrite: bool = False) -> Path:
    """Write a new key pair into ``directory``; returns the public key's path."""
    private_path = directory / PRIVATE_KEY_FILE
    public_path = directory / PUBLIC_KEY_FILE
    if private_path.exists() and not overwrite:
        raise ConfigError(
            f"{private_path} already exists; a new key would need admitting again. Keep it, "
            "or pass --overwrite to replace it."
        )
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH, format=serialization.PublicFormat.OpenSSH
    )
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(private_path, private)
    os.chmod(private_path, 0o600)
    atomic_write_bytes(public_path, public + b"\n")
    return public_path


def check_private_key(directory: Path) -> Path:
    """The private key file in ``directory``, checked to be an EC P-384 OpenSSH key."""
    path = directory / PRIVATE_KEY_FILE
    if not path.is_file():
        raise ConfigError(
            f"No node key in {directory} (expected {PRIVATE_KEY_FILE}). Make one with "
            f"`fedrec merchant keygen {directory}` and have the coordinator admit "
            f"{PUBLIC_KEY_FILE}."
        )
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted OpenSSH private key ({exc}).") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise ConfigError(f"{path}: Flower's SuperNode authentication needs an EC P-384 key.")
    return path
