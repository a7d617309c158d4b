"""load_events: the file-level problem classes (1-7, 14, 15), each naming the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import DataProblem
from tests.common.data.loader_helpers import HEADER, by_line, load_error, write

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
