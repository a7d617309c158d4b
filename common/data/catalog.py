"""The federation item catalog: item keys mean the same thing everywhere.

Every merchant encodes its item keys through the same catalog, so row ``j``
of the shared item table is the same product at every merchant. Keys that are
not in the catalog are counted and skipped, never silently remapped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from common.errors import DataError, DataProblem

CATALOG_VERSION = 1


def catalog_digest(keys: tuple[str, ...]) -> str:
    """SHA-256 over the catalog's keys in order: what "the same catalog" means everywhere."""
    import hashlib

    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class EncodedItems:
    """Item keys mapped to catalog indices; ``-1`` marks keys outside the catalog."""

    indices: npt.NDArray[np.int64]
    unknown_count: int
    unknown_examples: tuple[str, ...]


@dataclass(frozen=True)
class ItemCatalog:
    """Ordered, duplicate-free item keys; a key's position is its shared index."""

    keys: tuple[str, ...]
    _index: pd.Index = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = pd.Index(self.keys, dtype=object)
        if not index.is_unique:
            dupes = index[index.duplicated()].unique()[:5].tolist()
            raise ValueError(f"catalog keys must be unique; duplicated: {dupes}")
        object.__setattr__(self, "_index", index)

    @classmethod
    def from_keys(cls, keys: npt.ArrayLike) -> ItemCatalog:
        """Build a catalog of the distinct keys, sorted so the order is reproducible."""
        distinct = np.unique(np.asarray(keys, dtype=object).astype(str))
        return cls(keys=tuple(distinct.tolist()))

    def __len__(self) -> int:
        return len(self.keys)

    def encode(self, keys: npt.ArrayLike) -> EncodedItems:
        """Map keys to indices; unknown keys get ``-1`` and are counted."""
        indices = self._index.get_indexer(np.asarray(keys, dtype=object)).astype(np.int64)
        unknown = indices < 0
        examples = tuple(pd.unique(np.asarray(keys, dtype=object)[unknown])[:5].tolist())
        return EncodedItems(indices, int(unknown.sum()), examples)

    def decode(self, indices: npt.NDArray[np.int64]) -> npt.NDArray[np.object_]:
        return np.asarray(self.keys, dtype=object)[indices]

    def to_json(self) -> str:
        return json.dumps({"version": CATALOG_VERSION, "items": list(self.keys)})

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ItemCatalog:
        """A catalog file: fedrec's ``catalog.json``, or plain text with one item key per line."""
        if str(path).endswith(".json"):
            return cls.load(path)
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(
                str(path),
                [DataProblem(None, f"cannot read the catalog ({exc})")],
                hint="pass a catalog.json or a UTF-8 text file with one item key per line",
            ) from exc
        keys = [line.strip() for line in lines]
        seen: dict[str, int] = {}
        problems = []
        for number, key in enumerate(keys, start=1):
            if not key:
                continue
            if key in seen:
                problems.append(DataProblem(number, f"item {key!r} repeats line {seen[key]}"))
            seen.setdefault(key, number)
        if not seen:
            problems.append(DataProblem(None, "no item keys (expected one per line)"))
        if problems:
            raise DataError(str(path), problems, hint="list every item key once")
        return cls(keys=tuple(seen))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ItemCatalog:
        try:
            payload = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(keys=tuple(str(k) for k in payload["items"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(
                str(path),
                [DataProblem(None, f"not a fedrec item catalog ({exc})")],
                hint="point at the catalog.json written by `fedrec simulate`",
            ) from exc
