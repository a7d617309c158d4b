"""load_events: every format's happy path, and properties over arbitrary input."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.data.formats import FORMATS
from common.data.loaders import load_events
from common.errors import DataError
from tests.common.data.loader_helpers import HEADER, strs, write

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
