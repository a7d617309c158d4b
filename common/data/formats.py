"""The one list of event-log formats: a name -> the reader that loads it, and a line of help.

A reader is an object with ``read(where, fmt, log)`` (for the formats here,
in :mod:`common.data.loaders`). Readers are imported on first use, so this
module imports nothing heavy: the CLIs take their ``--format`` help from it.
Adding a format is its reader, one entry here and its tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from common.data.schema import Interactions
    from common.data.validation import ProblemLog


class EventReader(Protocol):
    """Reads one file of its format; logs every problem, returns ``None`` when nothing loads."""

    def read(self, where: str, fmt: str, log: ProblemLog) -> Interactions | None: ...


@dataclass(frozen=True)
class FormatEntry:
    """A registered format: ``path`` is ``"package.module:NAME"`` of its reader."""

    path: str
    summary: str


DATA_FORMATS: dict[str, FormatEntry] = {
    "csv": FormatEntry(
        "common.data.loaders:CSV", "fedrec columns with a header line (rating may stand for value)"
    ),
    "parquet": FormatEntry("common.data.loaders:PARQUET", "Parquet with the fedrec columns"),
    "movielens-100k": FormatEntry(
        "common.data.loaders:MOVIELENS_100K", "MovieLens 100K u.data: tab-separated, no header"
    ),
    "movielens-1m": FormatEntry(
        "common.data.loaders:MOVIELENS_1M", "MovieLens 1M ratings.dat: '::'-separated, no header"
    ),
    "movielens-latest": FormatEntry(
        "common.data.loaders:MOVIELENS_LATEST",
        "MovieLens latest ratings.csv: userId,movieId,rating,timestamp",
    ),
}
FORMATS: Final[tuple[str, ...]] = tuple(DATA_FORMATS)
DEFAULT_FORMAT: Final = "csv"


def format_help() -> str:
    """The ``--format`` help: "csv, parquet, ... or movielens-latest (default: csv)"."""
    return f"{', '.join(FORMATS[:-1])} or {FORMATS[-1]} (default: {DEFAULT_FORMAT})"


def format_reader(fmt: str) -> EventReader:
    """The reader registered as ``fmt``, imported now (``fmt`` must be one of ``FORMATS``)."""
    module, _, name = DATA_FORMATS[fmt].path.partition(":")
    reader: EventReader = getattr(importlib.import_module(module), name)
    return reader
