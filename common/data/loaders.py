"""Read an event log from disk into a validated ``Interactions``.

``load_events`` reads fedrec CSV or Parquet and the MovieLens rating files (a
reader per format, registered by name in :mod:`common.data.formats`). Every
problem in the file is collected in one pass and raised as a single
``DataError`` with line numbers; no parser stack trace escapes.

Text files take a fast path first: Arrow parses every field as a string and the
checks in ``validation`` run on whole columns. Only when the file's structure is
broken (field counts, blank lines, bad UTF-8, quoted newlines) does a slower
line-by-line pass with the ``csv`` module run, so each broken line is reported.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from common.data.formats import DEFAULT_FORMAT, FORMATS, format_reader
from common.data.schema import (
    ALL_COLUMNS,
    EVENT_TYPE,
    ITEM_ID,
    MERCHANT_ID,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TIMESTAMP,
    USER_ID,
    VALUE,
    Interactions,
)
from common.data.validation import Lines, ProblemLog, build_interactions, check_columns, decode_utf8

_FOLDED = "\x1f"  # "::" in ml-1m files becomes this one-character delimiter
_KEY_COLUMNS = (USER_ID, ITEM_ID, EVENT_TYPE, MERCHANT_ID)


@dataclass(frozen=True)
class _Layout:
    """How one text format spells its columns; the reader of that format."""

    delimiter: str
    shown_delimiter: str
    quoting: bool
    columns: Mapping[str, str]  # column name in the file -> schema column
    required: tuple[str, ...]  # file column names that must be present
    fixed_header: tuple[str, ...] | None = None  # headerless files: names by position
    iso_timestamps: bool = False
    event_type: str | None = "rating"
    folded: bytes | None = None  # a multi-byte delimiter, read as the one-character _FOLDED
    rating_synonym: bool = False  # a ``rating`` column stands in for ``value`` (hinted)

    @property
    def csv_quoting(self) -> Literal[0, 3]:
        return csv.QUOTE_MINIMAL if self.quoting else csv.QUOTE_NONE

    def read(self, where: str, fmt: str, log: ProblemLog) -> Interactions | None:
        return _load_text(where, fmt, self, log)


class _Parquet:
    """The Parquet reader: columns by their schema names."""

    def read(self, where: str, fmt: str, log: ProblemLog) -> Interactions | None:
        return _load_parquet(where, log)


RATING: Final = "rating"  # a csv column read as the event value, in place of ``value``

_CSV_COLUMNS = {name: name for name in ALL_COLUMNS} | {RATING: VALUE}
_ML_NAMES = ("user", "item", "rating", "timestamp")
_ML_LATEST_NAMES = ("userId", "movieId", "rating", "timestamp")
_ML_SCHEMA = (USER_ID, ITEM_ID, VALUE, TIMESTAMP)
_ML = dict(zip(_ML_NAMES, _ML_SCHEMA, strict=True))
# The readers :data:`common.data.formats.DATA_FORMATS` names.
CSV: Final = _Layout(
    ",", "','", True, _CSV_COLUMNS, REQUIRED_COLUMNS, None, True, None, rating_synonym=True
)
PARQUET: Final = _Parquet()
MOVIELENS_100K: Final = _Layout("\t", "tabs", False, _ML, _ML_NAMES, _ML_NAMES)
MOVIELENS_1M: Final = _Layout(_FOLDED, "'::'", False, _ML, _ML_NAMES, _ML_NAMES, folded=b"::")
MOVIELENS_LATEST: Final = _Layout(
    ",", "','", True, dict(zip(_ML_LATEST_NAMES, _ML_SCHEMA, strict=True)), _ML_LATEST_NAMES
)
_SCHEMA_HELP = f"columns {','.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})"
_CSV_HELP = f"{_SCHEMA_HELP[:-1]}, or {RATING} in place of {VALUE})"


def load_events(path: str | os.PathLike[str], *, fmt: str = DEFAULT_FORMAT) -> Interactions:
    """Load and validate an event log; raise one ``DataError`` listing every problem.

    ``fmt`` is one of ``FORMATS``. Problems carry the 1-based file line (the
    header is line 1; headerless MovieLens files start at line 1; Parquet uses
    the row number).
    """
    where = os.fspath(path)
    log = ProblemLog()
    if fmt not in FORMATS:
        log.file(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
        log.hint(f"pass --format with one of: {', '.join(FORMATS)}")
    size = _check_path(where, log)
    if size == 0:
        log.file("file is empty (0 bytes; expected at least one event)")
    if log:
        raise log.error(where)
    events = format_reader(fmt).read(where, fmt, log)
    if events is None or log:
        raise log.error(where)
    return events


def _check_path(where: str, log: ProblemLog) -> int | None:
    if os.path.isdir(where):
        log.file("is a directory, not a file (expected an events file)")
        try:
            files = sorted(f for f in os.listdir(where) if f.endswith((".csv", ".dat", ".data")))
        except OSError:
            files = []
        example = os.path.join(where, files[0] if files else "ratings.csv")
        log.hint(f"pass the file inside it to --data, e.g. {example}")
        return None
    try:
        return os.stat(where).st_size
    except FileNotFoundError:
        log.file("file not found")
        log.hint(f"check the path passed to --data (relative paths start at {os.getcwd()})")
    except OSError as exc:
        log.file(f"cannot open the file ({exc.strerror})")
        log.hint("check the path passed to --data and its permissions")
    return None


def _read_bytes(where: str, log: ProblemLog) -> bytes | None:
    try:
        with open(where, "rb") as handle:
            return handle.read()
    except OSError as exc:
        log.file(f"cannot read the file ({exc.strerror})")
        return None


def _first_line(data: bytes) -> bytes:
    """Line 1 without its ending ("\n", "\r\n" or a lone "\r")."""
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    cr = data.find(b"\r", 0, end)
    return data[: end if cr < 0 else cr]


def _guess_format(head: bytes) -> str | None:
    """The format a file's first line suggests, for hints."""
    if head.startswith(b"PAR1"):
        return "parquet"
    line = _first_line(head).decode("utf-8", errors="replace")
    if "::" in line:
        return "movielens-1m"
    if "\t" in line:
        return "movielens-100k"
    if line.startswith("userId,movieId"):
        return "movielens-latest"
    if USER_ID in line and ITEM_ID in line:
        return "csv"
    return None


def _hint_format(head: bytes, fmt: str, log: ProblemLog) -> None:
    guess = _guess_format(head)
    if guess is not None and guess != fmt:
        log.hint(f"the file looks like {guess}; pass --format {guess}")


def _load_text(where: str, fmt: str, layout: _Layout, log: ProblemLog) -> Interactions | None:
    data = _read_bytes(where, log)
    if data is None:
        return None
    if data.isspace():
        log.file(f"file contains only whitespace ({len(data)} bytes; expected at least one event)")
        return None
    if data.startswith(b"PAR1"):
        log.file(f"file is Parquet, not {fmt} text")
        _hint_format(data, fmt, log)
        return None
    data = data.removeprefix(codecs.BOM_UTF8)
    if layout.folded is not None:
        data = data.replace(layout.folded, _FOLDED.encode())
    header = layout.fixed_header or _header(data, layout, log)
    first = 1 if layout.fixed_header else 2
    wanted: dict[str, int] = {}  # schema column -> first field index naming it
    for index, name in enumerate(header):
        wanted.setdefault(layout.columns.get(name.strip(), ""), index)
    wanted.pop("", None)
    _check_synonyms(header, layout, log)
    header_is_utf8 = _is_utf8(_first_line(data)) or first == 1
    fast = _fast_rows(data, layout, header, first) if header_is_utf8 else None
    if fast is not None:
        table, lines = fast
        records = table.num_rows
        columns = {name: table.column(i).to_pandas() for name, i in wanted.items()}
    else:
        rows, line_list, records = _slow_rows(data, layout, header, first, log)
        lines = np.asarray(line_list, dtype=np.int64)
        columns = {name: pd.Series([r[i] for r in rows], dtype="str") for name, i in wanted.items()}
    if records == 0:
        log.file(
            "header line only, no data rows (expected at least one event after the header)"
            if first == 2
            else "no events (expected at least one line)"
        )
    if log:
        _hint_format(data, fmt, log)
        log.hint(f"--format {fmt} expects {_expects(layout)}")
    events = build_interactions(
        columns, lines, log, iso_timestamps=layout.iso_timestamps, event_type=layout.event_type
    )
    if log and layout.rating_synonym and RATING in (name.strip() for name in header):
        log.hint(f"the {RATING!r} column is read as the event {VALUE}")
    return events


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _expects(layout: _Layout) -> str:
    if layout.fixed_header:
        names = " ".join(layout.fixed_header)
        count = len(layout.fixed_header)
        return f"no header, {count} fields per line separated by {layout.shown_delimiter}: {names}"
    if layout.event_type is None:
        return f"a header line and {_CSV_HELP}"
    return f"the header line {','.join(layout.required)}"


def _header(data: bytes, layout: _Layout, log: ProblemLog) -> tuple[str, ...]:
    """Parse line 1 and log duplicate or missing column names."""
    line = _first_line(data).decode("utf-8", errors="replace")
    try:
        header = tuple(next(csv.reader([line], layout.delimiter, quoting=layout.csv_quoting)))
    except (csv.Error, StopIteration):  # e.g. an unclosed quote
        header = tuple(line.split(layout.delimiter))
    names = [name.strip() for name in header]
    complete = check_columns(names, layout.required, log, line=1)
    if not complete and all(name.lstrip("+-").isdigit() for name in names):
        log.hint("the first line must be a header naming the columns")
    return header


def _check_synonyms(header: tuple[str, ...], layout: _Layout, log: ProblemLog) -> None:
    """Log two header names that fill the same column, such as ``value`` and ``rating``."""
    first: dict[str, int] = {}  # file column name -> its first 1-based position
    for index, name in enumerate(header):
        first.setdefault(name.strip(), index + 1)
    found: dict[str, list[str]] = {}  # schema column -> the file columns that fill it
    for name, place in first.items():
        column = layout.columns.get(name)
        if column is not None:
            found.setdefault(column, []).append(f"{name!r} (column {place})")
    for column, names in found.items():
        if len(names) > 1:
            log.line(
                1,
                f"columns {' and '.join(names)} both give the event {column} "
                "(expected only one of them; drop or rename the other)",
            )


def _fast_rows(
    data: bytes, layout: _Layout, header: tuple[str, ...], first: int
) -> tuple[pa.Table, Lines] | None:
    """Arrow's parser, or ``None`` when the file's structure needs the line-by-line pass."""
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1  # trailing newlines are not blank lines
    names = [f"f{i}" for i in range(len(header))]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data).slice(0, end)),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=first - 1),
            parse_options=pacsv.ParseOptions(
                delimiter=layout.delimiter,
                quote_char='"' if layout.quoting else False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError):
        return None  # wrong field counts, bad UTF-8, header-only without newline
    if table.num_rows != data.count(b"\n", 0, end) + 2 - first:
        return None  # quoted newlines or lone "\r": records are not lines
    head = pc.utf8_trim_whitespace(table.column(0))
    suspects = pc.equal(head, "")  # blank lines (or rows of empty fields)
    if first == 2:
        suspects = pc.or_(suspects, pc.equal(head, header[0].strip()))  # repeated header?
    if pc.any(suspects).as_py():
        return None
    return table, np.arange(table.num_rows, dtype=np.int64) + first


def _slow_rows(
    data: bytes, layout: _Layout, header: tuple[str, ...], first: int, log: ProblemLog
) -> tuple[list[list[str]], list[int], int]:
    """Line-by-line pass: keep well-formed rows, log every structural problem.

    Returns the rows, their start lines and the number of non-blank records.
    """
    text = decode_utf8(data, log)
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=layout.delimiter, quoting=layout.csv_quoting
    )
    names = [name.strip() for name in header]
    rows: list[list[str]] = []
    lines: list[int] = []
    blanks: list[int] = []  # reported only when a later line has data: trailing blanks are fine
    records = done = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            log.line(done + 1, f"unreadable CSV ({exc})")
            done = reader.line_num
            continue
        line, done = done + 1, reader.line_num
        if line < first:
            continue
        if not record or (len(record) == 1 and not record[0].strip()):
            blanks.append(line)
            continue
        records += 1
        for blank in blanks:
            log.line(blank, "blank line (expected an event)")
        blanks.clear()
        if first == 2 and record[0].strip() == names[0] and [f.strip() for f in record] == names:
            log.line(line, "repeated header line (expected an event; were files concatenated?)")
        elif len(record) != len(header):
            log.line(
                line,
                f"wrong number of fields: found {len(record)}, expected {len(header)} "
                f"separated by {layout.shown_delimiter}",
            )
        else:
            rows.append(record)
            lines.append(line)
    return rows, lines, records


def _load_parquet(where: str, log: ProblemLog) -> Interactions | None:
    try:
        with pq.ParquetFile(where) as parquet:
            table = parquet.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.file(f"not a readable Parquet file ({reason}; expected Parquet with {_SCHEMA_HELP})")
        try:
            with open(where, "rb") as handle:
                _hint_format(handle.read(4096), "parquet", log)
        except OSError:
            pass
        return None
    names = table.schema.names
    check_columns(names, REQUIRED_COLUMNS, log, line=None)
    if table.num_rows == 0:
        log.file("no data rows (0 rows; expected at least one event)")
    columns: dict[str, pd.Series] = {}
    for name in ALL_COLUMNS:
        if name not in names:
            continue
        column = table.column(names.index(name))
        if name in _KEY_COLUMNS:
            try:
                column = pc.cast(column, pa.string())
            except (pa.ArrowException, ValueError):
                log.file(f"column {name!r} has type {column.type} (expected strings or integers)")
                continue
        columns[name] = column.to_pandas()
    lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
    return build_interactions(columns, lines, log, iso_timestamps=True, event_type=None)
