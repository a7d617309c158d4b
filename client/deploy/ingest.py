"""New events for an enrolled merchant: ``fedrec merchant ingest``, and what ``status`` shows.

A merchant keeps selling after it joined. :func:`ingest` validates a file of
new events exactly as enrolment does (every problem with its file and line),
pseudonymises its user IDs under the merchant's existing key (a returning
user keeps their pseudonym), drops events already in the log (same user,
item, time and, where the log has them, event type and value) and appends
the rest. The log is replaced in one atomic rename, so a crash or a bad file
leaves it byte for byte as it was. Events naming items outside the
federation catalog the merchant last received are counted (they are skipped
at encoding, as at enrolment). The encoded training data is rebuilt at the
next run.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from client.deploy.enrolment import (
    LOG_COLUMNS,
    OPTIONAL_LOG_COLUMNS,
    pseudonymised_frame,
    read_info,
    read_log,
    sha256_file,
    write_log,
)
from common.constants import (
    MERCHANT_CATALOG_DIGEST_FILE,
    MERCHANT_CATALOG_FILE,
    MERCHANT_INFO_FILE,
    MERCHANT_PSEUDONYM_KEY_FILE,
)
from common.data.loaders import load_events
from common.data.schema import ITEM_ID, USER_ID
from common.errors import ConfigError
from common.fileio import DiskFullError, atomic_write_text, is_disk_full

_RETRY = "run `fedrec merchant ingest` again (events already stored are dropped as duplicates)"


@dataclass(frozen=True)
class Ingested:
    """What one ingest added, and the log after it (counts only, nothing about any one user)."""

    file: str
    sha256: str
    read: int  # events in the file
    added: int
    duplicates: int  # in the log already, or repeated within the file
    new_users: int
    unknown_items: int | None  # added events outside the last catalog; None: no catalog yet
    events: int
    users: int
    items: int
    at: str


def ingest(state: Path, *, data: Path, fmt: str) -> Ingested:
    """Validate ``data`` and append its new events to ``state``'s log, atomically."""
    info = read_info(state)
    if info is None or not info.get("source_sha256"):
        raise ConfigError(
            f"{state} holds no enrolled merchant ({MERCHANT_INFO_FILE} is missing or its "
            "enrolment did not finish): enrol the first log with `fedrec merchant join ... "
            f"--data FILE --state {state}`, then ingest new events."
        )
    key_path = state / MERCHANT_PSEUDONYM_KEY_FILE
    if not key_path.is_file():
        raise ConfigError(
            f"{key_path} is missing: without the merchant's pseudonymisation key every user "
            "would become a new user. Restore it from a backup."
        )
    events = load_events(data, fmt=fmt)  # DataError lists every problem with its line
    log = read_log(state)
    new = pseudonymised_frame(key_path.read_bytes(), events)
    _check_columns(log, new, data=data)
    known = set(log[USER_ID])
    merged = pd.concat([log, new], ignore_index=True)
    fresh = ~merged.duplicated(subset=list(log.columns), keep="first")
    added = new[fresh.to_numpy()[len(log) :]]
    catalog = _catalog_items(state)
    unknown = None if catalog is None else int((~added[ITEM_ID].isin(catalog)).sum())
    after = pd.concat([log, added], ignore_index=True)
    result = Ingested(
        file=str(data.resolve()),
        sha256=sha256_file(data),
        read=len(new),
        added=len(added),
        duplicates=len(new) - len(added),
        new_users=len(set(added[USER_ID]) - known),
        unknown_items=unknown,
        events=len(after),
        users=int(after[USER_ID].nunique()),
        items=int(after[ITEM_ID].nunique()),
        at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    if result.added:
        try:
            _store(state, after, info, result)
        except DiskFullError as exc:
            raise DiskFullError(exc.path, retry=_RETRY) from exc
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(Path(exc.filename or state), retry=_RETRY) from exc
            raise
    return result


def _check_columns(log: pd.DataFrame, new: pd.DataFrame, *, data: Path) -> None:
    missing = sorted(set(log.columns) - set(new.columns))
    extra = sorted(set(new.columns) - set(log.columns))
    if missing or extra:
        differs = "; ".join(
            [f"it lacks {', '.join(missing)}"] * bool(missing)
            + [f"it adds {', '.join(extra)}"] * bool(extra)
        )
        raise ConfigError(
            f"{data}: {differs}, against the enrolled log's columns "
            f"({', '.join(log.columns)}). New events must carry the same optional columns "
            f"({', '.join(OPTIONAL_LOG_COLUMNS)}) as the enrolled log. Nothing was written."
        )


def _catalog_items(state: Path) -> set[str] | None:
    path = state / MERCHANT_CATALOG_FILE
    if not path.is_file():
        return None
    try:
        return {str(k) for k in json.loads(path.read_text(encoding="utf-8"))["items"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable federation catalog ({exc}).") from exc


def _store(state: Path, log: pd.DataFrame, info: dict[str, Any], result: Ingested) -> None:
    """Encoded data marked stale, then the log (the commit), then the description."""
    (state / MERCHANT_CATALOG_DIGEST_FILE).unlink(missing_ok=True)  # re-encoded at the next run
    write_log(state, log)
    ingests = list(info.get("ingests") or [])
    ingests.append({k: v for k, v in asdict(result).items() if k not in ("events", "users")})
    described = {
        **info,
        "events": result.events,
        "users": result.users,
        "items": result.items,
        "ingests": ingests,
    }
    atomic_write_text(state / MERCHANT_INFO_FILE, json.dumps(described, indent=2))


def log_summary(state: Path) -> dict[str, Any]:
    """Events, users, items and time span of the stored log (read from the log itself)."""
    log = read_log(state)
    times = log["timestamp"].to_numpy(np.int64) if len(log) else np.zeros(1, np.int64)

    def when(seconds: int) -> str:
        return dt.datetime.fromtimestamp(int(seconds), dt.UTC).isoformat(timespec="seconds")

    return {
        "events": len(log),
        "users": int(log[USER_ID].nunique()),
        "items": int(log[ITEM_ID].nunique()),
        "first_event": when(times.min()),
        "last_event": when(times.max()),
        "columns": [c for c in log.columns if c not in LOG_COLUMNS],
    }
