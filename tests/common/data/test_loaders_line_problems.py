"""load_events: the line-level problem classes (8-13, 16) with exact line numbers.

Also several problems, and file-level with line problems, reported together.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tests.common.data.loader_helpers import HEADER, bad_lines, by_line, load_error, write

# --- problem classes: lines -------------------------------------------------------


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
