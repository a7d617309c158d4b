"""Limits of the run flags `fedrec simulate` and `fedrec run` share, checked before any import.

Light on purpose (no torch, Flower or Ray): the CLIs call it before a command's work starts.
"""

from __future__ import annotations


def run_flag_problems(
    *, epsilon: float | None, delta: float | None, rounds: int | None
) -> list[str]:
    """Every problem with ``--epsilon``, ``--delta`` and ``--rounds`` (``None``: not given)."""
    problems = []
    if epsilon is not None and not epsilon > 0:
        problems.append(f"--epsilon must be > 0 (leave it out for no DP), got {epsilon:g}")
    if delta is not None and not 0 < delta < 1:
        problems.append(f"--delta must be in (0, 1), e.g. --delta 1e-6; got {delta:g}")
    if rounds is not None and rounds < 1:
        problems.append(f"--rounds must be >= 1, got {rounds}")
    return problems
