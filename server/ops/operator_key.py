"""The operator's signing key: it signs the federation ledger and every run ``fedrec run`` submits.

The private half is ``DIR/coordinator.key`` (0600, never leaves the
coordinator). The public half is ``DIR/operator.pub``: the operator gives it to
merchants together with ``ca.pem``; each merchant pins it at its first
``fedrec merchant join --operator-key operator.pub`` and from then on executes
only runs whose settings and app it signed (:mod:`client.deploy.run_guard`).
"""

from __future__ import annotations

from pathlib import Path

from common.constants import OPERATOR_PUBLIC_KEY_FILE
from common.fileio import atomic_write_text
from common.privacy.signing import Signer, key_fingerprint
from server.ops.coordinator import CoordinatorDir


def operator_public_key_path(directory: CoordinatorDir) -> Path:
    return directory.root / OPERATOR_PUBLIC_KEY_FILE


def operator_signer(directory: CoordinatorDir) -> Signer:
    """The operator's key (made on first use) with its public half written beside it."""
    signer = Signer.load_or_create(directory.ledger_key)
    path = operator_public_key_path(directory)
    line = f"{signer.public_key} fedrec-operator {key_fingerprint(signer.public_key)}\n"
    if not path.is_file() or path.read_text(encoding="ascii", errors="replace") != line:
        atomic_write_text(path, line)
    return signer
