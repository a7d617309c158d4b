"""Coordinator operations: ``init``, ``admit`` and ``revoke`` (``start`` is in :mod:`superlink`)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from common.constants import COORDINATOR_PORT
from common.data.catalog import ItemCatalog
from common.errors import ConfigError
from common.node_keys import fingerprint, load_public_key
from common.privacy.signing import Signer
from server.ops.coordinator import (
    PENDING,
    REGISTERED,
    REVOKE_PENDING,
    REVOKED,
    Admission,
    CoordinatorDir,
    CoordinatorSettings,
    admissions_lock,
    default_internal_port,
    load_admissions,
    new_admission,
    save_admissions,
    write_settings,
)
from server.ops.tls import make_tls, with_loopback


def init_coordinator(
    root: Path,
    *,
    sans: list[str],
    host: str = "0.0.0.0",
    port: int = COORDINATOR_PORT,
    internal_port: int | None = None,
    valid_days: int = 365,
    catalog: Path | None = None,
    force_tls: bool = False,
) -> CoordinatorDir:
    """Create (or renew the TLS material of) a coordinator directory.

    The certificate is valid for ``sans`` and 127.0.0.1 (the SuperLink's only
    address); ``internal_port`` (default ``port + 1``) is the SuperLink's port there.
    """
    directory = CoordinatorDir(root)
    exists = directory.config_path.is_file()
    if exists and not force_tls:
        raise ConfigError(
            f"{root} is already a coordinator directory. Pass --force-tls to renew its TLS "
            "material (merchants then need the new ca.pem); admissions and runs are kept."
        )
    settings = CoordinatorSettings(  # validates both ports before anything is written
        host=host,
        port=port,
        internal_port=default_internal_port(port) if internal_port is None else internal_port,
        sans=tuple(with_loopback(sans)),
    )
    items = ItemCatalog.read(catalog) if catalog is not None else None  # validate first
    staging = root / ".init-tls"
    shutil.rmtree(staging, ignore_errors=True)
    staged = CoordinatorDir(staging)
    make_tls(staged.tls, sans=list(settings.sans), valid_days=valid_days)  # none on a bad SAN
    target = directory.tls.ca_cert.parent
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.tls.ca_cert.parent.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    write_settings(directory, settings)
    if items is not None:
        items.save(directory.catalog)
    Signer.load_or_create(directory.ledger_key)
    for sub in (directory.runs, directory.logs, directory.database.parent):
        sub.mkdir(parents=True, exist_ok=True)
    return directory


def admit(directory: CoordinatorDir, *, name: str, public_key: Path, valid_days: int) -> Admission:
    directory.settings()
    line = load_public_key(public_key)
    with admissions_lock(directory):
        admissions = load_admissions(directory)
        admission = new_admission(
            admissions,
            name=name,
            public_key=line,
            fingerprint=fingerprint(line),
            valid_days=valid_days,
        )
        save_admissions(directory, admissions)
    return admission


def revoke(directory: CoordinatorDir, *, name: str) -> Admission:
    directory.settings()
    with admissions_lock(directory):
        admissions = load_admissions(directory)
        admission = admissions.get(name)
        if admission is None:
            known = ", ".join(sorted(admissions)) or "none"
            raise ConfigError(f"No merchant {name!r} was admitted (admitted: {known}).")
        if admission.status in (REVOKED, REVOKE_PENDING):
            raise ConfigError(f"Merchant {name!r} is already revoked.")
        admission.status = REVOKE_PENDING if admission.status == REGISTERED else REVOKED
        save_admissions(directory, admissions)
    return admission


def describe(directory: CoordinatorDir, say: Callable[[str], None]) -> None:
    for admission in load_admissions(directory).values():
        expiry = f", expires {admission.expires_at}" if admission.expires_at else ""
        state = {PENDING: "admitted (registers at start)"}.get(admission.status, admission.status)
        say(f"  {admission.name}: key {admission.fingerprint}, {state}{expiry}")
