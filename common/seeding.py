"""Explicit randomness: every stream derives from one run seed plus named ids.

No global seeding happens anywhere; callers receive generators.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def _words(*ids: int | str) -> list[int]:
    words = []
    for part in ids:
        if isinstance(part, str):  # stable across processes, unlike hash()
            words.append(int.from_bytes(hashlib.sha256(part.encode()).digest()[:4], "little"))
        else:
            words.append(int(part))
    return words


def numpy_rng(seed: int, *ids: int | str) -> np.random.Generator:
    """A numpy generator for the stream named by ``ids`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, *_words(*ids)]))


def torch_generator(seed: int, *ids: int | str) -> torch.Generator:
    """A torch CPU generator for the stream named by ``ids`` under ``seed``."""
    state = np.random.SeedSequence([seed, *_words(*ids)]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
