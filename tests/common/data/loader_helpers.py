"""Helpers shared by the load_events tests (test_loaders_*.py): write a file, expect a DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.data.loaders import load_events
from common.errors import DataError

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
