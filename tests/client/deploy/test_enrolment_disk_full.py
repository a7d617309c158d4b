"""A full disk during `fedrec merchant join`: one clear error, no partial files, and recovery."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from client.deploy.enrolment import enrol
from common.errors import FedrecError
from common.fileio import DiskFullError, atomic_write_bytes
from simulations.cli import main

ROWS = [("alice", "a", 1), ("alice", "b", 2), ("bob", "b", 3), ("bob", "c", 4)]
NEW_ROWS = ROWS + [("carol", "a", 5), ("carol", "c", 6)]


def _write_events(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    lines = ["user_id,item_id,timestamp"] + [f"{u},{i},{t}" for u, i, t in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fill_disk_at(monkeypatch: pytest.MonkeyPatch, failing_write: int) -> list[int]:
    """Make the ``failing_write``-th atomic write (1-based) write half its bytes, then ENOSPC."""
    real_fdopen: Callable[..., Any] = os.fdopen
    calls: list[int] = []

    class _Full:
        def __init__(self, handle: Any) -> None:
            self._handle = handle

        def __enter__(self) -> _Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self._handle.close()

        def write(self, payload: bytes) -> int:
            self._handle.write(payload[: len(payload) // 2])
            self._handle.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        calls.append(fd)
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return _Full(handle) if len(calls) == failing_write else handle

    monkeypatch.setattr("common.fileio.os.fdopen", fdopen)
    return calls


def _left(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir())


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    _fill_disk_at(monkeypatch, 1)
    # Execute
    with pytest.raises(DiskFullError) as caught:
        atomic_write_bytes(target, b"new contents")
    # Assert
    assert str(caught.value) == (
        f"no space left on device writing {target}; free space and try again (nothing "
        "half-written was left: the previous version of the file, if any, is unchanged)."
    )
    assert isinstance(caught.value, FedrecError) and isinstance(caught.value, OSError)
    assert caught.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert _left(tmp_path) == ["file.bin"]


def test_first_join_on_a_full_disk_fails_cleanly_and_the_next_join_enrols(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: writes are the pseudonym key (1), the event log (2), the description (3).
    state = tmp_path / "state"
    data = _write_events(tmp_path / "events.csv", ROWS)
    _fill_disk_at(monkeypatch, 2)
    # Execute
    with pytest.raises(DiskFullError) as caught:
        enrol(state, data=data, fmt="csv", name="shop-a")
    # Assert
    assert str(caught.value).startswith(
        f"no space left on device writing {state / 'events.parquet'}; free space and run "
        "`fedrec merchant join` again"
    )
    assert _left(state) == ["pseudonym.key"]  # complete, reused below; no .tmp, no half log
    key = (state / "pseudonym.key").read_bytes()

    monkeypatch.undo()  # space freed
    enrolment = enrol(state, data=data, fmt="csv", name="shop-a")
    assert (enrolment.events, enrolment.users, enrolment.items, enrolment.changed) == (
        4,
        2,
        3,
        True,
    )
    assert (state / "pseudonym.key").read_bytes() == key
    assert len(pd.read_parquet(state / "events.parquet")) == 4
    assert not any(name.endswith(".tmp") for name in _left(state))


def test_replacing_a_log_on_a_full_disk_is_redone_by_the_next_join(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: enrolled with ROWS; a new log fails while writing the description (write 3,
    # after the pending description (1) and the new event log (2)).
    state = tmp_path / "state"
    old = _write_events(tmp_path / "old.csv", ROWS)
    new = _write_events(tmp_path / "new.csv", NEW_ROWS)
    enrol(state, data=old, fmt="csv", name="shop-a")
    _fill_disk_at(monkeypatch, 3)
    with pytest.raises(DiskFullError) as caught:
        enrol(state, data=new, fmt="csv", name="shop-a")
    assert caught.value.path == state / "merchant.json"
    assert not any(name.endswith(".tmp") for name in _left(state))
    monkeypatch.undo()
    # Execute: going back to the old log must not count as "unchanged".
    enrolment = enrol(state, data=old, fmt="csv", name="shop-a")
    # Assert
    assert enrolment.changed and enrolment.events == 4
    assert len(pd.read_parquet(state / "events.parquet")) == 4


def test_cli_prints_the_disk_full_error_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: join reduced to its enrolment (no coordinator here).
    import client.deploy.commands

    def join(spec: Any, *, say: Callable[[str], None]) -> int:
        enrol(spec.state, data=spec.data, fmt=spec.fmt, name=spec.name)
        return 0

    monkeypatch.setattr(client.deploy.commands, "join", join)
    state = tmp_path / "shop-a"
    data = _write_events(tmp_path / "events.csv", ROWS)
    _fill_disk_at(monkeypatch, 1)
    argv = ["merchant", "join", "--coordinator", "localhost:1", "--ca", str(tmp_path / "ca")]
    argv += ["--key", str(tmp_path), "--data", str(data), "--state", str(state)]
    # Execute
    code = main(argv)
    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(
        f"fedrec: no space left on device writing {state / 'pseudonym.key'}; free space and "
        "run `fedrec merchant join` again"
    )
    assert "Traceback" not in err
    assert _left(state) == []
