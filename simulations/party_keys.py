"""Simulated parties' signing keys: outside the run directory, and gone when the run ends.

A simulation plays every party, so it holds every party's Ed25519 ledger key.
Kept in the run directory, those keys would let anyone given the directory
rewrite and re-sign every ledger in it, and ``fedrec audit verify`` would
pass. The keys live instead in a hidden directory beside the run directory
(same filesystem, so a Ray cluster on shared storage sees it too), mode 0700,
deleted when the run ends, successfully or not. The finished run's ledgers
are then sealed: they verify under the public keys their genesis entries
name, and nobody can sign another entry for them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.constants import COORDINATOR_KEY_FILE, MERCHANTS_DIR


@dataclass(frozen=True)
class PartyKeys:
    root: Path

    @property
    def coordinator(self) -> Path:
        return self.root / COORDINATOR_KEY_FILE

    @property
    def merchants(self) -> Path:
        """One directory per merchant (by its directory name) holding its ``ledger.key``."""
        return self.root / MERCHANTS_DIR


@contextlib.contextmanager
def ephemeral_party_keys(run_dir: Path) -> Iterator[PartyKeys]:
    """A private key directory beside ``run_dir``, removed on exit."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.keys-", dir=run_dir.parent))
    os.chmod(root, 0o700)
    try:
        yield PartyKeys(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
