"""Helpers shared by the ranking-metric tests (test_ranking_*.py): CSR rows, random problems."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

INF = math.inf


def _csr(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.array([i for r in rows for i in r], dtype=np.int64)
    return indptr, indices


@st.composite
def _problems(draw: st.DrawFn, *, tied: bool) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    n_users = draw(st.integers(1, 6))
    n_items = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if tied:  # few distinct values, including -inf and +inf
        values = np.array([-INF, -1.0, 0.0, 0.5, 1.0, INF])
        scores = values[rng.integers(0, values.size, size=(n_users, n_items))]
    else:
        scores = np.stack([rng.permutation(n_items) for _ in range(n_users)]).astype(float)
    targets = rng.integers(0, n_items, size=n_users)
    excluded = []
    for u in range(n_users):
        pool = [i for i in range(n_items) if i != targets[u]]
        excluded.append({i for i in pool if rng.random() < 0.4})
    return scores, targets, excluded
