"""Atomic file writes: readers see the old file or the new one, never half of one.

A write that fails (disk full, quota) removes its temporary file, so nothing
half-written is left behind, and the previous version of the file is untouched.
A full disk raises :class:`DiskFullError`, which the CLI prints as one line.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from common.errors import FedrecError

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(FedrecError, OSError):
    """No space (or quota) left while writing ``path``; still an ``OSError`` for old handlers."""

    def __init__(self, path: Path, *, retry: str = "try again") -> None:
        self.path = path
        self.retry = retry
        self.message = (
            f"no space left on device writing {path}; free space and {retry} (nothing "
            "half-written was left: the previous version of the file, if any, is unchanged)."
        )
        super().__init__(errno.ENOSPC, self.message, str(path))

    def __str__(self) -> str:
        return self.message


def is_disk_full(error: BaseException) -> bool:
    """True for ``ENOSPC`` / ``EDQUOT`` errors, whatever raised them."""
    return isinstance(error, OSError) and error.errno in _FULL


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
