"""Vectorised checks that turn raw event columns into a validated ``Interactions``.

A loader hands over one pandas Series per schema column plus the file line of
every row. Each check builds a mask of bad rows with whole-column operations
and records one message per bad row in a ``ProblemLog``; nothing raises until
the loader has collected every problem in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from common.data.schema import (
    EVENT_TYPE,
    EVENT_TYPES,
    ITEM_ID,
    MERCHANT_ID,
    TIMESTAMP,
    USER_ID,
    VALUE,
    Interactions,
    StrArray,
)
from common.errors import DataError, DataProblem

Lines = npt.NDArray[np.int64]

_LATEST = pd.Timestamp.max.floor("s")  # pandas' nanosecond limit, 2262-04-11 23:47:16
_LATEST_SECONDS = int(_LATEST.value // 1_000_000_000)
_INTEGER = r"[+-]?[0-9]{1,18}"
_BAD_BYTE = re.compile("[\udc80-\udcff]")  # undecodable bytes under surrogateescape
_SHOWN_CHARS = 30


def shown(value: object) -> str:
    """``repr`` of a found value, cut short so one bad cell cannot flood the report."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        value = value[:_SHOWN_CHARS] + "..."
    return repr(value)


class ProblemLog:
    """Problems found so far (file-wide and per line) and the fixes to suggest."""

    def __init__(self) -> None:
        self._file: list[str] = []
        self._lines: dict[int, list[str]] = {}
        self._hints: list[str] = []

    def __bool__(self) -> bool:
        return bool(self._file or self._lines)

    def file(self, message: str) -> None:
        self._file.append(message)

    def line(self, line: int, message: str) -> None:
        self._lines.setdefault(line, []).append(message)

    def add(self, line: int | None, message: str) -> None:
        if line is None:
            self.file(message)
        else:
            self.line(line, message)

    def rows(self, lines: Lines, messages: str | Iterable[str]) -> None:
        """Record one message per line; a plain ``str`` is used for every line."""
        if len(lines) == 0:
            return
        if isinstance(messages, str):
            messages = [messages] * len(lines)
        for line, message in zip(lines.tolist(), messages, strict=True):
            self.line(line, message)

    def hint(self, text: str) -> None:
        if text not in self._hints:
            self._hints.append(text)

    def error(self, path: str) -> DataError:
        """One DataError: whole-file problems first, then one entry per bad line."""
        problems = [DataProblem(None, message) for message in self._file]
        problems += [
            DataProblem(line, "; ".join(self._lines[line])) for line in sorted(self._lines)
        ]
        return DataError(path, problems, hint="; ".join(self._hints))


def decode_utf8(data: bytes, log: ProblemLog) -> str:
    """Decode UTF-8, logging each line with undecodable bytes."""
    text = data.decode("utf-8", errors="surrogateescape")
    line, last, seen = 1, 0, set()
    for match in _BAD_BYTE.finditer(text):
        line += text.count("\n", last, match.start())
        last = match.start()
        if line not in seen:
            seen.add(line)
            column = match.start() - text.rfind("\n", 0, match.start())
            byte = ord(match.group()) - 0xDC00
            log.line(
                line, f"not valid UTF-8: byte 0x{byte:02x} at character {column} (expected UTF-8)"
            )
    if seen:
        log.hint("re-save the file as UTF-8 (it may be Latin-1 or a binary file)")
        text = _BAD_BYTE.sub("\ufffd", text)
    return text


def check_columns(
    names: Sequence[str], required: Sequence[str], log: ProblemLog, *, line: int | None
) -> bool:
    """Log duplicate and missing column names (at ``line``, the header); True when all present."""
    places: dict[str, list[str]] = {}  # name -> its 1-based column numbers, in one pass
    for index, name in enumerate(names):
        places.setdefault(name, []).append(str(index + 1))
    for name, found in places.items():
        if len(found) > 1:
            message = f"duplicate column name {name!r} in columns {' and '.join(found)}"
            log.add(line, f"{message} (expected each column once)")
    missing = [name for name in required if name not in places]
    if missing:
        log.file(
            f"missing required column(s) {', '.join(map(repr, missing))} "
            f"(found columns: {', '.join(map(repr, names))}; expected {', '.join(required)})"
        )
    return not missing


def _text(column: pd.Series) -> pd.Series:
    """Stripped strings, missing cells as ``""``."""
    return column.astype("str").fillna("").str.strip()


def _keys(column: pd.Series | None, name: str, lines: Lines, log: ProblemLog) -> StrArray | None:
    if column is None:
        return None
    text = _text(column)
    empty = (text == "").to_numpy(dtype=bool)
    log.rows(lines[empty], f"empty {name} (expected a non-empty id)")
    return text.to_numpy(dtype=object)


def _timestamps(
    column: pd.Series | None, lines: Lines, log: ProblemLog, *, iso: bool
) -> npt.NDArray[np.int64] | None:
    if column is None:
        return None
    seconds = np.zeros(len(column), dtype=np.int64)
    dated = np.zeros(len(column), dtype=bool)  # read as dates, not as unix seconds
    if pd.api.types.is_datetime64_any_dtype(column):
        bad = column.isna().to_numpy(dtype=bool)
        seconds[~bad] = _epoch_seconds(column[~bad])
        dated = ~bad
    elif pd.api.types.is_integer_dtype(column) and not pd.api.types.is_bool_dtype(column):
        seconds = column.to_numpy(dtype=np.int64)
        bad = np.zeros(len(column), dtype=bool)
    elif pd.api.types.is_float_dtype(column):
        floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~(np.isfinite(floats) & (floats == np.floor(floats)) & (np.abs(floats) < 2.0**62))
        seconds[~bad] = floats[~bad].astype(np.int64)
    else:
        text = _text(column)
        bad = ~text.str.fullmatch(_INTEGER).to_numpy(dtype=bool)
        seconds[~bad] = text[~bad].astype("int64").to_numpy()
        if iso and bad.any():
            where = np.flatnonzero(bad)
            moments = pd.to_datetime(text.iloc[where], format="ISO8601", utc=True, errors="coerce")
            ok = moments.notna().to_numpy(dtype=bool)
            seconds[where[ok]] = _epoch_seconds(moments[ok])
            bad[where[ok]] = False
            dated[where[ok]] = True
    expected = "unix seconds such as 978300760"
    if iso:
        expected += " or ISO-8601 such as 2001-01-01T00:00:00Z"
    log.rows(
        lines[bad],
        (
            f"empty timestamp (expected {expected})"
            if _is_blank(value)
            else f"timestamp {shown(value)} is not a valid time (expected {expected})"
            for value in column[bad].tolist()
        ),
    )
    negative = ~bad & (seconds < 0)
    log.rows(
        lines[negative],
        (
            f"negative timestamp {s} (expected unix seconds >= 0)"
            for s in seconds[negative].tolist()
        ),
    )
    late = dated & (seconds > _LATEST_SECONDS)
    log.rows(
        lines[late],
        (
            f"timestamp {shown(str(value))} is after {_LATEST:%Y-%m-%d %H:%M:%S} UTC "
            f"(expected a date from 1970-01-01 to {_LATEST:%Y-%m-%d %H:%M:%S} UTC, the range "
            "of pandas datetimes; give later times as unix seconds)"
            for value in column[late].tolist()
        ),
    )
    return seconds


def _epoch_seconds(moments: pd.Series) -> npt.NDArray[np.int64]:
    """Whole unix seconds of non-missing datetimes, at their own resolution.

    Never goes through nanoseconds, so dates outside pandas' 1677-2262 nanosecond
    range (``9999-12-31``) convert instead of raising ``OutOfBoundsDatetime``.
    """
    if moments.dt.tz is not None:
        moments = moments.dt.tz_convert("UTC").dt.tz_localize(None)
    return moments.to_numpy().astype("datetime64[s]").astype(np.int64)


def _is_blank(value: object) -> bool:
    return (
        value is None
        or (isinstance(value, float) and np.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _values(
    column: pd.Series | None, lines: Lines, log: ProblemLog
) -> npt.NDArray[np.float32] | None:
    if column is None:
        return None
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = _text(column)
        try:  # all cells numeric: the fast Arrow cast
            floats = text.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        except (ValueError, TypeError):
            numbers = pd.to_numeric(text, errors="coerce")
            floats = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(over="ignore", invalid="ignore"):
        values = floats.astype(np.float32)
    bad = ~np.isfinite(values)
    expected = "(expected a finite number such as a rating 4 or 3.5)"
    log.rows(
        lines[bad],
        (
            f"empty value {expected}"
            if _is_blank(raw)
            else f"value {shown(raw)} is not a finite float32 number {expected}"
            for raw in column[bad].tolist()
        ),
    )
    return values


def _event_types(column: pd.Series | None, lines: Lines, log: ProblemLog) -> StrArray | None:
    if column is None:
        return None
    text = _text(column)
    bad = ~text.isin(EVENT_TYPES).to_numpy(dtype=bool)
    expected = f"(expected one of {', '.join(EVENT_TYPES)})"
    log.rows(
        lines[bad],
        (
            f"empty event_type {expected}"
            if not found
            else f"unknown event_type {shown(found)} {expected}"
            for found in text[bad].tolist()
        ),
    )
    return text.to_numpy(dtype=object)


def build_interactions(
    columns: Mapping[str, pd.Series],
    lines: Lines,
    log: ProblemLog,
    *,
    iso_timestamps: bool,
    event_type: str | None = None,
) -> Interactions | None:
    """Check every column and return the events, or ``None`` when ``log`` holds problems.

    ``lines[i]`` is the file line (or row number) of row ``i``; ``event_type``,
    when given, is used for every row (MovieLens ratings).
    """
    user_id = _keys(columns.get(USER_ID), USER_ID, lines, log)
    item_id = _keys(columns.get(ITEM_ID), ITEM_ID, lines, log)
    timestamp = _timestamps(columns.get(TIMESTAMP), lines, log, iso=iso_timestamps)
    value = _values(columns.get(VALUE), lines, log)
    events = _event_types(columns.get(EVENT_TYPE), lines, log)
    merchant_id = _keys(columns.get(MERCHANT_ID), MERCHANT_ID, lines, log)
    if log or user_id is None or item_id is None or timestamp is None:
        return None
    if event_type is not None:
        events = np.full(len(user_id), event_type, dtype=object)
    return Interactions(
        user_id=user_id,
        item_id=item_id,
        timestamp=timestamp,
        event_type=events,
        value=value,
        merchant_id=merchant_id,
    )
