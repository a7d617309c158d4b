"""Run directories that appear whole or not at all.

A run is built in a hidden staging directory beside its destination and
renamed into place only when it completed; a failure removes the staging
directory, so a failed run leaves nothing half-written behind -- except a
privacy ledger: a run that already wrote one is kept whole as
``DESTINATION.incomplete`` so that what was released stays on the record.
A process killed outright leaves its hidden staging directory as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common.errors import RunDirError


def default_run_dir(root: Path = Path("runs")) -> Path:
    """``runs/run-YYYYmmdd-HHMMSS`` (with a numeric suffix if taken)."""
    import time

    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"run-{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / f"run-{stamp}-{n}"
    return candidate


def check_destination(destination: Path, *, overwrite: bool = False) -> None:
    """Refuse an existing ``destination`` unless ``overwrite``: cheap, so callers check first."""
    if destination.exists() and not overwrite:
        raise RunDirError(
            f"Run directory {destination} already exists; choose another --out or pass --overwrite."
        )


@contextlib.contextmanager
def staged_run_dir(destination: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging directory; on success it becomes ``destination``, on failure it vanishes."""
    check_destination(destination, overwrite=overwrite)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield staging
    except BaseException:
        if any(staging.rglob("*.jsonl")):  # privacy ledgers: never deleted
            kept = destination.with_name(destination.name + ".incomplete")
            n = 1
            while kept.exists():
                n += 1
                kept = destination.with_name(f"{destination.name}.incomplete-{n}")
            os.replace(staging, kept)
        else:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if destination.exists():
        shutil.rmtree(destination)
    os.replace(staging, destination)
