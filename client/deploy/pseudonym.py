"""Keyed pseudonymisation of user IDs, before anything else in fedrec sees them.

A merchant's pseudonymisation key (32 random bytes, ``pseudonym.key`` in its
state directory, mode 0600) never leaves the merchant. A user ID becomes
HMAC-SHA256(key, user ID), hex-encoded: stable across runs at that merchant,
unlinkable to the raw ID without the key, and different at every merchant.
HMAC comes from the ``cryptography`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes, hmac

from common.errors import ConfigError
from common.fileio import atomic_write_bytes

KEY_BYTES = 32


def load_or_create_key(path: Path) -> bytes:
    """The merchant's key in ``path``; made from ``os.urandom`` (mode 0600) if absent."""
    if not path.is_file():
        key = os.urandom(KEY_BYTES)
        atomic_write_bytes(path, key)
        os.chmod(path, 0o600)
        return key
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{path} holds {len(key)} bytes, expected a {KEY_BYTES}-byte pseudonymisation key. "
            "Restore it from a backup: a new key would turn every user into a new user."
        )
    return key


def pseudonymise(key: bytes, user_ids: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """HMAC-SHA256 of each user ID under ``key``, as hex strings (one per distinct ID)."""
    ids = np.asarray(user_ids, dtype=object).astype(str)
    distinct, inverse = np.unique(ids, return_inverse=True)
    out = np.empty(len(distinct), dtype=object)
    for i, raw in enumerate(distinct):
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(str(raw).encode("utf-8"))
        out[i] = mac.finalize().hex()
    return out[inverse]
