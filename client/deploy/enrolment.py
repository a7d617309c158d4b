"""A merchant's data at join time and at first contact with a federation catalog.

``fedrec merchant join`` reads the merchant's event log once, validates it
(every problem with its line), replaces each user ID with its keyed HMAC
(:mod:`client.deploy.pseudonym`) and keeps only that pseudonymised log in the state
directory. Raw user IDs are never written there and never reach training.

Items must mean the same everywhere, so encoding waits for the federation's
catalog: at the start of a run the coordinator sends it, and
:func:`encode_for_catalog` maps the merchant's item keys to shared indices
(unknown keys are counted, reported locally and skipped), then writes the
training data the :class:`~client.merchant.Merchant` reads. Every file is
written atomically, so a failure leaves the previous state intact; a full disk
is reported in one line, and the next join, once space is freed, enrols afresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from client.deploy.pseudonym import load_or_create_key, pseudonymise
from common.constants import (
    MERCHANT_CATALOG_DIGEST_FILE,
    MERCHANT_CATALOG_FILE,
    MERCHANT_DATA_FILE,
    MERCHANT_EVENTS_FILE,
    MERCHANT_INFO_FILE,
    MERCHANT_OPTIMIZER_FILE,
    MERCHANT_PSEUDONYM_KEY_FILE,
    MERCHANT_STATE_FILE,
    MERCHANT_USERS_FILE,
)
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.data.loaders import load_events
from common.data.schema import ITEM_ID, TIMESTAMP, USER_ID, Interactions
from common.errors import ConfigError
from common.fileio import DiskFullError, atomic_write_bytes, atomic_write_text, is_disk_full
from common.naming import check_name

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrolment:
    """What ``join`` prepared: counts a merchant can check, nothing about any one user."""

    name: str
    events: int
    users: int
    items: int
    source_sha256: str
    changed: bool  # False when the same file was already enrolled


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_info(state: Path) -> dict[str, object] | None:
    path = state / MERCHANT_INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable merchant description ({exc}).") from exc
    if not isinstance(info, dict):
        raise ConfigError(f"{path}: expected a JSON object.")
    return info


def enrol(state: Path, *, data: Path, fmt: str, name: str) -> Enrolment:
    """Validate ``data``, pseudonymise its user IDs and store the log in ``state``."""
    check_name(name)
    info = read_info(state)
    if info is not None and info.get("name") != name:
        raise ConfigError(
            f"{state} belongs to merchant {info.get('name')!r}, not {name!r}: its privacy "
            "account and ledger are that merchant's. Use that name or another --state."
        )
    events = load_events(data, fmt=fmt)  # DataError lists every problem with its line
    source = sha256_file(data)
    if info is not None and info.get("source_sha256") == source:
        return Enrolment(
            name=name,
            events=int(info["events"]),  # type: ignore[call-overload]
            users=int(info["users"]),  # type: ignore[call-overload]
            items=int(info["items"]),  # type: ignore[call-overload]
            source_sha256=source,
            changed=False,
        )
    try:
        return _write_enrolment(
            state, events, data=data, fmt=fmt, name=name, source=source, previous=info
        )
    except DiskFullError as exc:
        raise DiskFullError(exc.path, retry=_RETRY) from exc
    except OSError as exc:
        if is_disk_full(exc):  # a write outside common.fileio (directory, key permissions)
            raise DiskFullError(Path(exc.filename or state), retry=_RETRY) from exc
        raise


_RETRY = "run `fedrec merchant join` again"


def _write_enrolment(
    state: Path,
    events: Interactions,
    *,
    data: Path,
    fmt: str,
    name: str,
    source: str,
    previous: dict[str, object] | None,
) -> Enrolment:
    """Key, pseudonymised log, then description: each atomic, the description last.

    The description's source digest is what marks a log as enrolled. Replacing a
    log first clears that digest (keeping the merchant's name), so a join that
    fails part-way, e.g. on a full disk, is redone in full by the next one.
    """
    state.mkdir(parents=True, exist_ok=True)
    if previous is not None:  # a new event log: encoded data must be rebuilt at the next run
        pending = {**previous, "source_sha256": None}
        atomic_write_text(state / MERCHANT_INFO_FILE, json.dumps(pending, indent=2))
        (state / MERCHANT_CATALOG_DIGEST_FILE).unlink(missing_ok=True)
    key = load_or_create_key(state / MERCHANT_PSEUDONYM_KEY_FILE)
    write_log(state, pseudonymised_frame(key, events))
    enrolment = Enrolment(
        name=name,
        events=len(events),
        users=events.num_users,
        items=events.num_items,
        source_sha256=source,
        changed=True,
    )
    atomic_write_text(
        state / MERCHANT_INFO_FILE,
        json.dumps(
            {
                "name": name,
                "source": str(data.resolve()),
                "source_sha256": source,
                "format": fmt,
                "events": enrolment.events,
                "users": enrolment.users,
                "items": enrolment.items,
                "enrolled_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        ),
    )
    return enrolment


LOG_COLUMNS = (USER_ID, ITEM_ID, TIMESTAMP)  # and "event_type", "value" where the log has them
OPTIONAL_LOG_COLUMNS = ("event_type", "value")


def pseudonymised_frame(key: bytes, events: Interactions) -> pd.DataFrame:
    """The stored form of ``events``: user IDs replaced by their HMAC under ``key``."""
    users = pseudonymise(key, events.user_id)
    frame = pd.DataFrame({USER_ID: users, ITEM_ID: events.item_id, TIMESTAMP: events.timestamp})
    for column in OPTIONAL_LOG_COLUMNS:
        values = getattr(events, column)
        if values is not None:
            frame[column] = values
    return frame


def write_log(state: Path, frame: pd.DataFrame) -> None:
    """Replace the stored log with ``frame`` in one atomic rename (old or new, never half)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(state / MERCHANT_EVENTS_FILE, buffer.getvalue())


def read_log(state: Path) -> pd.DataFrame:
    """The stored, pseudonymised event log; a clear error where none was enrolled."""
    path = state / MERCHANT_EVENTS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{state} has no enrolled event log ({MERCHANT_EVENTS_FILE}); run "
            "`fedrec merchant join ... --data FILE --state DIR` to enrol one."
        )
    return pd.read_parquet(path)


@dataclass(frozen=True)
class Encoding:
    users: int
    unknown_events: int
    reused: bool


def encode_for_catalog(state: Path, catalog: ItemCatalog, *, digest: str) -> Encoding:
    """Encode the pseudonymised log through ``catalog`` (once per catalog) into training data."""
    marker = state / MERCHANT_CATALOG_DIGEST_FILE
    atomic_write_text(
        state / MERCHANT_CATALOG_FILE, json.dumps({"version": 1, "items": list(catalog.keys)})
    )
    if marker.is_file() and marker.read_text(encoding="utf-8").strip() == digest:
        return Encoding(users=-1, unknown_events=-1, reused=True)
    frame = read_log(state)
    events = Interactions(
        user_id=frame[USER_ID].to_numpy(object),
        item_id=frame[ITEM_ID].to_numpy(object),
        timestamp=frame[TIMESTAMP].to_numpy(np.int64),
        event_type=frame["event_type"].to_numpy(object) if "event_type" in frame else None,
        value=frame["value"].to_numpy(np.float32) if "value" in frame else None,
    )
    data = build_user_item_data(events, catalog)
    users_path = state / MERCHANT_USERS_FILE
    if (state / MERCHANT_STATE_FILE).is_file() and users_path.is_file():
        previous = json.loads(users_path.read_text(encoding="utf-8"))
        if list(previous) != list(data.user_keys):  # new events (`fedrec merchant ingest`)
            # The local user parameters are rows in the old users' order: they start afresh
            # (never released, so nothing is spent); the privacy account is untouched.
            logger.warning(
                "%d users now (%d before): the local user parameters start afresh",
                data.num_users,
                len(previous),
            )
            (state / MERCHANT_STATE_FILE).unlink()
            (state / MERCHANT_OPTIMIZER_FILE).unlink(missing_ok=True)
    data.save(state, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
    atomic_write_text(marker, digest)
    if data.unknown_items:
        logger.warning(
            "%d of %d events name items outside the federation catalog; they are skipped",
            data.unknown_items,
            len(events),
        )
    return Encoding(users=data.num_users, unknown_events=data.unknown_items, reused=False)
