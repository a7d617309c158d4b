"""load_events: every format's happy path, and every problem class with exact line numbers."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.data.formats import FORMATS
from common.data.loaders import load_events
from common.errors import DataError, DataProblem

HEADER = "user_id,item_id,timestamp\n"


def write(tmp_path: Path, text: str | bytes, name: str = "events.csv") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def load_error(path: Path, fmt: str = "csv") -> DataError:
    """Load, expect a DataError naming the path, and return it."""
    with pytest.raises(DataError) as caught:
        load_events(path, fmt=fmt)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)
    return caught.value


def by_line(error: DataError) -> dict[int | None, str]:
    """Messages indexed by line; file-level problems (joined by " | ") under None."""
    found: dict[int | None, str] = {}
    for problem in error.problems:
        earlier = found.get(problem.line)
        found[problem.line] = (
            problem.message if earlier is None else f"{earlier} | {problem.message}"
        )
    return found


def bad_lines(error: DataError) -> list[int]:
    return [p.line for p in error.problems if p.line is not None]


def strs(*values: str) -> np.ndarray:
    return np.array(values, dtype=object)


# --- happy paths ---------------------------------------------------------------------


def test_csv_required_columns_only(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u1,i1,100\nu2,i2,200\n")

    events = load_events(path)

    assert events.user_id.dtype == object and events.item_id.dtype == object
    np.testing.assert_array_equal(events.user_id, strs("u1", "u2"))
    np.testing.assert_array_equal(events.item_id, strs("i1", "i2"))
    assert events.timestamp.dtype == np.int64
    np.testing.assert_array_equal(events.timestamp, [100, 200])
    assert events.event_type is None and events.value is None and events.merchant_id is None
    assert all(type(key) is str for key in events.user_id)


def test_csv_all_optional_columns_extra_column_whitespace_and_quotes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "merchant_id, user_id ,item_id,timestamp,notes,event_type,value\n"
        '"Shop, Inc", u1 , i1 ,100,"free text, with comma", view ,1\n'
        "m2,u2,i2, 200 ,,purchase,2.5\n",
    )

    events = load_events(path, fmt="csv")

    np.testing.assert_array_equal(events.user_id, strs("u1", "u2"))
    np.testing.assert_array_equal(events.item_id, strs("i1", "i2"))
    np.testing.assert_array_equal(events.timestamp, [100, 200])
    assert events.event_type is not None and events.value is not None
    assert events.merchant_id is not None
    np.testing.assert_array_equal(events.event_type, strs("view", "purchase"))
    np.testing.assert_array_equal(events.merchant_id, strs("Shop, Inc", "m2"))
    assert events.value.dtype == np.float32
    np.testing.assert_array_equal(events.value, np.array([1.0, 2.5], dtype=np.float32))


def test_csv_rating_column_gives_the_values(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item_id,rating,timestamp\nu1,i1,4,100\nu2,i2,2.5,200\n")

    events = load_events(path, fmt="csv")

    assert events.value is not None and events.value.dtype == np.float32
    np.testing.assert_array_equal(events.value, np.array([4.0, 2.5], dtype=np.float32))
    np.testing.assert_array_equal(events.timestamp, [100, 200])
    assert events.event_type is None


def test_csv_iso_timestamps_become_utc_seconds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + "u,i,2001-01-01T00:00:00Z\n"
        + "u,i,2001-01-01T02:00:00+02:00\n"
        + "u,i,2001-01-01\n"
        + "u,i,2001-01-01 00:00:05\n"
        + "u,i,978307210\n",
    )

    events = load_events(path)

    np.testing.assert_array_equal(
        events.timestamp, [978307200, 978307200, 978307200, 978307205, 978307210]
    )


def test_csv_with_bom_crlf_and_trailing_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfuser_id,item_id,timestamp\r\nu1,i1,1\r\nu2,i2,2\r\n\r\n\n")

    events = load_events(path)

    np.testing.assert_array_equal(events.user_id, strs("u1", "u2"))
    np.testing.assert_array_equal(events.timestamp, [1, 2])


def test_parquet_casts_keys_to_str_and_reads_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": ["a", "b"],
            "timestamp": pd.to_datetime(["2001-01-01T00:00:00Z", "2001-01-01T00:00:10Z"]),
            "value": [4, 5],
            "event_type": ["rating", "rating"],
        }
    ).to_parquet(path)

    events = load_events(path, fmt="parquet")

    np.testing.assert_array_equal(events.user_id, strs("1", "2"))
    np.testing.assert_array_equal(events.item_id, strs("a", "b"))
    np.testing.assert_array_equal(events.timestamp, [978307200, 978307210])
    assert events.timestamp.dtype == np.int64
    assert events.value is not None and events.value.dtype == np.float32
    np.testing.assert_array_equal(events.value, [4.0, 5.0])
    assert events.merchant_id is None


def test_parquet_integer_timestamps(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [978300760]}).to_parquet(path)

    events = load_events(path, fmt="parquet")

    np.testing.assert_array_equal(events.timestamp, [978300760])
    assert events.event_type is None and events.value is None


def test_movielens_100k(tmp_path: Path) -> None:
    path = write(tmp_path, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n", "u.data")

    events = load_events(path, fmt="movielens-100k")

    np.testing.assert_array_equal(events.user_id, strs("196", "186"))
    np.testing.assert_array_equal(events.item_id, strs("242", "302"))
    np.testing.assert_array_equal(events.timestamp, [881250949, 891717742])
    assert events.value is not None and events.value.dtype == np.float32
    np.testing.assert_array_equal(events.value, [3.0, 3.0])
    assert events.event_type is not None
    np.testing.assert_array_equal(events.event_type, strs("rating", "rating"))
    assert events.merchant_id is None


def test_movielens_1m(tmp_path: Path) -> None:
    path = write(tmp_path, "1::1193::5::978300760\n1::661::3::978302109\n", "ratings.dat")

    events = load_events(path, fmt="movielens-1m")

    np.testing.assert_array_equal(events.user_id, strs("1", "1"))
    np.testing.assert_array_equal(events.item_id, strs("1193", "661"))
    np.testing.assert_array_equal(events.timestamp, [978300760, 978302109])
    assert events.value is not None
    np.testing.assert_array_equal(events.value, np.array([5.0, 3.0], dtype=np.float32))
    assert events.event_type is not None
    np.testing.assert_array_equal(events.event_type, strs("rating", "rating"))


def test_movielens_latest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n",
        "ratings.csv",
    )

    events = load_events(path, fmt="movielens-latest")

    np.testing.assert_array_equal(events.user_id, strs("1", "1"))
    np.testing.assert_array_equal(events.item_id, strs("1", "3"))
    np.testing.assert_array_equal(events.timestamp, [964982703, 964981247])
    assert events.value is not None
    np.testing.assert_array_equal(events.value, np.array([4.0, 3.5], dtype=np.float32))
    assert events.event_type is not None
    np.testing.assert_array_equal(events.event_type, strs("rating", "rating"))


def test_formats_constant() -> None:
    assert FORMATS == ("csv", "parquet", "movielens-100k", "movielens-1m", "movielens-latest")


# --- problem classes -----------------------------------------------------------------


def test_1_missing_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"

    error = load_error(path)

    assert error.problems == [DataProblem(None, "file not found")]
    assert "--data" in error.hint


def test_2_directory(tmp_path: Path) -> None:
    write(tmp_path, HEADER + "u,i,1\n", "ratings.csv")

    error = load_error(tmp_path)
    lines = by_line(error)

    assert list(lines) == [None]
    assert "is a directory" in lines[None]
    assert str(tmp_path / "ratings.csv") in error.hint


@pytest.mark.parametrize(
    ("content", "phrase"), [(b"", "file is empty (0 bytes"), (b" \n\t\n\n", "only whitespace")]
)
@pytest.mark.parametrize("fmt", ["csv", "movielens-1m", "parquet"])
def test_3_empty_file(tmp_path: Path, content: bytes, phrase: str, fmt: str) -> None:
    path = write(tmp_path, content)

    error = load_error(path, fmt)
    lines = by_line(error)

    assert len(error.problems) == 1 and error.problems[0].line is None
    if fmt == "parquet" and content:
        assert "not a readable Parquet file" in lines[None]
    else:
        assert phrase in lines[None]


@pytest.mark.parametrize("text", [HEADER, HEADER.strip(), HEADER + "\n\n"])
def test_4_header_only(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    error = load_error(path)
    lines = by_line(error)

    assert list(lines) == [None]
    assert "header line only, no data rows" in lines[None]


def test_4_parquet_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": [], "item_id": [], "timestamp": []}, dtype=str).to_parquet(path)

    error = load_error(path, "parquet")
    lines = by_line(error)

    assert lines == {None: "no data rows (0 rows; expected at least one event)"}


def test_5_missing_columns_named_and_found_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item,time\nu,i,1\n")

    error = load_error(path)
    lines = by_line(error)

    assert list(lines) == [None]
    assert lines[None].startswith("missing required column(s) 'item_id', 'timestamp'")
    assert "found columns: 'user_id', 'item', 'time'" in lines[None]


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n", "movielens-latest"),
        ("1::1193::5::978300760\n", "movielens-1m"),
        ("196\t242\t3\t881250949\n", "movielens-100k"),
    ],
)
def test_5_movielens_file_given_as_csv_hints_format(
    tmp_path: Path, text: str, suggested: str
) -> None:
    path = write(tmp_path, text)

    error = load_error(path, "csv")
    lines = by_line(error)

    assert "missing required column(s)" in lines[None]
    assert f"--format {suggested}" in error.hint


def test_5_parquet_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"]}).to_parquet(path)

    error = load_error(path, "parquet")
    lines = by_line(error)

    assert lines[None].startswith("missing required column(s) 'timestamp'")


def test_6_duplicate_column(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item_id,timestamp,timestamp\nu,i,1,2\n")

    error = load_error(path)
    lines = by_line(error)

    assert lines == {
        1: "duplicate column name 'timestamp' in columns 3 and 4 (expected each column once)"
    }


def test_6_parquet_duplicate_column(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    arrays = [pa.array(["u"]), pa.array(["i"]), pa.array([1]), pa.array([2])]
    names = ["user_id", "item_id", "timestamp", "timestamp"]
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)

    error = load_error(path, "parquet")

    assert by_line(error) == {
        None: "duplicate column name 'timestamp' in columns 3 and 4 (expected each column once)"
    }


def test_7_repeated_header_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\n" + HEADER + "u,i,2\n")

    error = load_error(path)
    lines = by_line(error)

    assert list(lines) == [3]
    assert "repeated header line" in lines[3]


def test_8_wrong_field_counts(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\nu,i\nu,i,1,extra\nu,i,2\n")

    error = load_error(path)
    lines = by_line(error)

    assert lines == {
        3: "wrong number of fields: found 2, expected 3 separated by ','",
        4: "wrong number of fields: found 4, expected 3 separated by ','",
    }


def test_8_movielens_1m_field_counts_count_from_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "1::1::5::978300760\n1::2::5\n1,3,5,978300760\n", "ratings.dat")

    error = load_error(path, "movielens-1m")
    lines = by_line(error)

    assert lines == {
        2: "wrong number of fields: found 3, expected 4 separated by '::'",
        3: "wrong number of fields: found 1, expected 4 separated by '::'",
    }


def test_8_quoted_newline_keeps_physical_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, 'user_id,item_id,timestamp,merchant_id\nu,i,1,"two\nlines"\nu,i,x,m\n')

    error = load_error(path)
    lines = by_line(error)

    assert list(lines) == [4]
    assert "timestamp 'x' is not a valid time" in lines[4]


def test_9_empty_user_and_item(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\n ,i,1\nu,,1\n")

    error = load_error(path)
    lines = by_line(error)

    assert lines == {
        3: "empty user_id (expected a non-empty id)",
        4: "empty item_id (expected a non-empty id)",
    }


def test_10_bad_and_negative_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\nu,i,yesterday\nu,i,-5\nu,i,1.5\nu,i,\n")

    error = load_error(path)
    lines = by_line(error)

    assert set(lines) == {3, 4, 5, 6}
    assert lines[3].startswith("timestamp 'yesterday' is not a valid time (expected unix")
    assert lines[4] == "negative timestamp -5 (expected unix seconds >= 0)"
    assert lines[5].startswith("timestamp '1.5' is not a valid time")
    assert lines[6].startswith("empty timestamp (expected unix seconds")


def test_10_movielens_rejects_iso_timestamps(tmp_path: Path) -> None:
    path = write(tmp_path, "1\t2\t3\t2001-01-01\n", "u.data")

    error = load_error(path, "movielens-100k")
    lines = by_line(error)

    assert lines == {
        1: "timestamp '2001-01-01' is not a valid time (expected unix seconds such as 978300760)"
    }


def test_11_bad_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "user_id,item_id,timestamp,value\nu,i,1,4\nu,i,1,five\nu,i,1,nan\n"
        "u,i,1,inf\nu,i,1,\nu,i,1,1e300\n",
    )

    error = load_error(path)
    lines = by_line(error)

    assert set(lines) == {3, 4, 5, 6, 7}
    assert lines[3].startswith("value 'five' is not a finite float32 number (expected")
    assert lines[4].startswith("value 'nan' is not a finite")
    assert lines[5].startswith("value 'inf' is not a finite")
    assert lines[6].startswith("empty value (expected a finite number")
    assert lines[7].startswith("value '1e300' is not a finite float32 number")


def test_11_bad_rating_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item_id,timestamp,rating\nu,i,1,4\nu,i,2,five\nu,i,3,\n")

    error = load_error(path)
    lines = by_line(error)

    assert set(lines) == {3, 4}
    assert lines[3].startswith("value 'five' is not a finite float32 number (expected")
    assert lines[4].startswith("empty value (expected a finite number")
    assert "the 'rating' column is read as the event value" in error.hint


def test_11_value_and_rating_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item_id,value,timestamp,rating\nu,i,4,1,5\n")

    error = load_error(path)

    assert by_line(error) == {
        1: "columns 'value' (column 3) and 'rating' (column 5) both give the event value "
        "(expected only one of them; drop or rename the other)"
    }


def test_11_parquet_nan_value_reported_by_row(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    frame = {
        "user_id": ["u", "v"],
        "item_id": ["i", "j"],
        "timestamp": [1, 2],
        "value": [1.0, float("nan")],
    }
    pd.DataFrame(frame).to_parquet(path)

    error = load_error(path, "parquet")
    lines = by_line(error)

    assert list(lines) == [2]
    assert lines[2].startswith("empty value")


def test_10_parquet_bad_timestamps_reported_by_row_number(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    frame = {
        "user_id": ["u", "v", "w"],
        "item_id": ["i", "j", "k"],
        "timestamp": ["2001-01-01T00:00:00Z", "soon", "-3"],
    }
    pd.DataFrame(frame).to_parquet(path)

    error = load_error(path, "parquet")

    lines = by_line(error)
    assert list(lines) == [2, 3]
    assert lines[2].startswith("timestamp 'soon' is not a valid time")
    assert lines[3] == "negative timestamp -3 (expected unix seconds >= 0)"


def test_12_unknown_and_empty_event_types(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,item_id,timestamp,event_type\nu,i,1,view\nu,i,1,like\nu,i,1,\n")

    error = load_error(path)
    lines = by_line(error)

    expected = "(expected one of view, click, cart, purchase, rating)"
    assert lines == {
        3: f"unknown event_type 'like' {expected}",
        4: f"empty event_type {expected}",
    }


def test_13_invalid_utf8_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER.encode() + b"u,i,1\nu\xe9,i,1\nu,i,1\nu,\xff\xfe,2\n")

    error = load_error(path)
    lines = by_line(error)

    assert lines == {
        3: "not valid UTF-8: byte 0xe9 at character 2 (expected UTF-8)",
        5: "not valid UTF-8: byte 0xff at character 3 (expected UTF-8)",
    }
    assert "UTF-8" in error.hint


def test_13_invalid_utf8_in_header_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, b"user_id,item_id,timestamp,not\xe9s\nu,i,1,x\n")

    error = load_error(path)

    assert by_line(error) == {1: "not valid UTF-8: byte 0xe9 at character 30 (expected UTF-8)"}


def test_14_unknown_format(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\n")

    error = load_error(path, "tsv")
    lines = by_line(error)

    assert lines == {
        None: "unknown format 'tsv' (expected one of csv, parquet, "
        "movielens-100k, movielens-1m, movielens-latest)"
    }
    assert "movielens-latest" in error.hint


def test_15_csv_given_as_parquet(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\n")

    error = load_error(path, "parquet")
    lines = by_line(error)

    assert list(lines) == [None]
    assert lines[None].startswith("not a readable Parquet file (")
    assert "--format csv" in error.hint


def test_15_truncated_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1]}).to_parquet(good)
    path = write(tmp_path, good.read_bytes()[:-20], "bad.parquet")

    error = load_error(path, "parquet")
    lines = by_line(error)

    assert lines[None].startswith("not a readable Parquet file (")


def test_15_parquet_given_as_csv(tmp_path: Path) -> None:
    source = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "timestamp": [1]}).to_parquet(source)

    error = load_error(source, "csv")
    lines = by_line(error)

    assert lines == {None: "file is Parquet, not csv text"}
    assert "--format parquet" in error.hint


def test_16_blank_lines_in_the_middle(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "u,i,1\n\nu,i,2\n   \nu,i,3\n\n")

    error = load_error(path)
    lines = by_line(error)

    assert lines == {3: "blank line (expected an event)", 5: "blank line (expected an event)"}


def test_twenty_five_bad_lines_are_counted_and_capped(tmp_path: Path) -> None:
    rows = [f"u{k},i,{'bad' if k % 2 else k}\n" for k in range(50)]
    path = write(tmp_path, HEADER + "".join(rows))

    error = load_error(path)

    assert len(error.problems) == 25
    assert bad_lines(error) == [k + 2 for k in range(1, 50, 2)]
    assert f"Cannot read events from {path}: 25 problems." in str(error)
    assert "... and 15 more." in str(error)
    assert str(error).count(f"{path}, line ") == 10


def test_several_problem_kinds_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        b"user_id,item_id,timestamp,event_type,value\n"  # 1
        b"u,i,1,view,1\n"  # 2 fine
        b",i,1,view,1\n"  # 3 empty user
        b"u,i,soon,view,1\n"  # 4 bad timestamp
        b"\n"  # 5 blank
        b"u,i,1,view\n"  # 6 too few fields
        b"u,i,1,nap,x\n"  # 7 event type and value
        b"u\xff,i,1,view,1\n"  # 8 bad UTF-8
        b"user_id,item_id,timestamp,event_type,value\n"  # 9 repeated header
        b"u,i,-1,view,1\n",  # 10 negative timestamp
    )

    error = load_error(path)
    lines = by_line(error)

    assert bad_lines(error) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "empty user_id" in lines[3]
    assert "timestamp 'soon'" in lines[4]
    assert "blank line" in lines[5]
    assert "found 4, expected 5" in lines[6]
    assert "unknown event_type 'nap'" in lines[7] and "value 'x'" in lines[7]
    assert "not valid UTF-8" in lines[8]
    assert "repeated header line" in lines[9]
    assert "negative timestamp -1" in lines[10]
    assert len(error.problems) == 8


def test_file_level_and_line_problems_together(tmp_path: Path) -> None:
    path = write(tmp_path, "user_id,user_id,timestamp\nu,u,x\n")

    error = load_error(path)
    lines = by_line(error)

    assert error.problems[0].line is None
    assert "missing required column(s) 'item_id'" in lines[None]
    assert "duplicate column name 'user_id'" in lines[1]
    assert "timestamp 'x'" in lines[2]


# --- properties ----------------------------------------------------------------------

KEYS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Z")),
    min_size=1,
    max_size=6,
)
ROWS = st.lists(
    st.tuples(KEYS, KEYS, st.integers(0, 2**40), st.sampled_from(["view", "cart", "purchase"])),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(rows=ROWS, bad=st.sets(st.integers(0, 29), max_size=5))
def test_round_trip_and_bad_timestamps_land_on_their_lines(
    rows: list[tuple[str, str, int, str]], bad: set[int]
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["user_id", "item_id", "timestamp", "event_type"])
    for k, (user, item, moment, kind) in enumerate(rows):
        writer.writerow([user, item, "oops" if k in bad else moment, kind])
    expected_bad = sorted(k + 2 for k in bad if k < len(rows))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.csv"
        path.write_text(buffer.getvalue(), encoding="utf-8", newline="")

        if expected_bad:
            with pytest.raises(DataError) as caught:
                load_events(path)
            assert [p.line for p in caught.value.problems] == expected_bad
        else:
            events = load_events(os.fspath(path))
            np.testing.assert_array_equal(events.user_id, strs(*(r[0].strip() for r in rows)))
            np.testing.assert_array_equal(events.item_id, strs(*(r[1].strip() for r in rows)))
            np.testing.assert_array_equal(events.timestamp, [r[2] for r in rows])


PIECES = st.sampled_from(
    [
        b"user_id",
        b"item_id",
        b"timestamp",
        b"value",
        b"event_type",
        b"view",
        b"u",
        b"1",
        b"-2",
        b"2001-01-01",
        b"1.5",
        b"nan",
        b",",
        b"::",
        b"\t",
        b'"',
        b"\n",
        b"\r",
        b"\r\n",
        b" ",
        b"\xff",
        b"\xc3\xa9",
        b"\xef\xbb\xbf",
        b"PAR1",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    head=st.sampled_from([b"", HEADER.encode()]),
    body=st.lists(PIECES, max_size=40),
    fmt=st.sampled_from(FORMATS),
)
def test_arbitrary_bytes_give_events_or_a_data_error(
    head: bytes, body: list[bytes], fmt: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events"
        path.write_bytes(head + b"".join(body))

        try:
            events = load_events(path, fmt=fmt)
        except DataError as error:
            assert error.problems
        else:
            assert len(events) > 0
            assert all(type(key) is str and key for key in events.user_id)
