"""Timestamps outside pandas' nanosecond range and very wide headers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.data.loaders import load_events
from common.data.validation import ProblemLog, check_columns
from common.errors import DataError

LATE = (
    "is after 2262-04-11 23:47:16 UTC (expected a date from 1970-01-01 to "
    "2262-04-11 23:47:16 UTC, the range of pandas datetimes; give later times as unix seconds)"
)


def test_csv_timestamps_past_2262_are_problems_collected_with_the_others(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,timestamp\n"
        "u1,i1,9999-12-31\n"
        "u1,i2,2001-01-01T00:00:00Z\n"
        ",i3,5\n"
        "u2,i1,2262-04-11T23:47:17Z\n"
        "u2,i2,2262-04-11T23:47:16Z\n"
        "u3,i1,99999999999\n",
        encoding="utf-8",
    )
    # Execute
    with pytest.raises(DataError) as caught:
        load_events(path)
    # Assert
    found = {p.line: p.message for p in caught.value.problems}
    assert found == {
        2: f"timestamp '9999-12-31' {LATE}",
        4: "empty user_id (expected a non-empty id)",
        5: f"timestamp '2262-04-11T23:47:17Z' {LATE}",
    }
    assert f"{path}, line 2: timestamp '9999-12-31'" in str(caught.value)
    # Unix seconds are plain integers: any value >= 0 is accepted, as before.
    assert 7 not in found


def test_iso_timestamp_before_1970_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp\nu1,i1,1500-01-01\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_events(path)
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (2, "negative timestamp -14831769600 (expected unix seconds >= 0)")
    ]


def test_parquet_datetime_column_past_2262_is_a_problem_with_its_row(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    stamps = [dt.datetime(2001, 1, 1), dt.datetime(9999, 12, 31)]
    table = pa.table(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "timestamp": pa.array(stamps, pa.timestamp("us")),
        }
    )
    pq.write_table(table, path)
    with pytest.raises(DataError) as caught:
        load_events(path, fmt="parquet")
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (2, f"timestamp '9999-12-31 00:00:00' {LATE}")
    ]


def test_parquet_datetime_column_in_range_converts_to_unix_seconds(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    stamps = [dt.datetime(2001, 1, 1, tzinfo=dt.UTC), dt.datetime(2262, 4, 11, tzinfo=dt.UTC)]
    table = pa.table(
        {
            "user_id": ["a", "b"],
            "item_id": ["x", "y"],
            "timestamp": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
        }
    )
    pq.write_table(table, path)
    events = load_events(path, fmt="parquet")
    assert events.timestamp.tolist() == [978307200, 9223286400]


def test_duplicate_check_on_a_20k_column_header() -> None:
    # Prepare: 20,000 distinct names, then two repeats of column 3's name.
    names = [f"c{i}" for i in range(20_000)] + ["c2", "user_id", "c2"]
    log = ProblemLog()
    # Execute
    complete = check_columns(names, ["user_id", "item_id"], log, line=1)
    # Assert
    error = log.error("wide.csv")
    assert complete is False
    assert error.problems[0].line is None
    assert error.problems[0].message.startswith("missing required column(s) 'item_id'")
    assert error.problems[1].line == 1
    assert error.problems[1].message == (
        "duplicate column name 'c2' in columns 3 and 20001 and 20003 (expected each column once)"
    )
    assert len(error.problems) == 2
