"""One-run empirical lower bound on epsilon (Steinke, Nasr & Jagielski, NeurIPS 2023).

The audit: ``m`` canaries, each included in training independently with
probability 1/2. After training, an auditor scores every canary from the
released output, guesses "in" for the highest scores and "out" for the
lowest (``r`` guesses, abstaining on the rest) and gets ``v`` right.

If training is (epsilon, delta)-DP, the number of correct guesses is
dominated by Binomial(r, e^eps / (1 + e^eps)) up to a delta term (their
Theorem 5.2): ``P[correct >= v] <= P[Binom(r, q) >= v] + 2 m delta * a``
with ``a = max_i P[v - i <= Binom(r, q) < v] / i``. The lower bound at
confidence ``1 - p`` is the largest epsilon whose p-value is still below
``p``: training cannot be that private, or ``v`` correct guesses would have
been too unlikely. Pure math on counts; scipy's binomial distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Probability of at least ``v`` correct of ``r`` guesses if training is (eps, delta)-DP."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Binom(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[Binom = v - i], i = 1..v
    slope = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(tail + 2 * m * delta * slope, 1.0)


def epsilon_lower_bound(
    *, m: int, r: int, v: int, delta: float, confidence: float = 0.95, tol: float = 1e-4
) -> float:
    """The largest epsilon rejected at ``confidence``: training is not (eps, delta)-DP."""
    p = 1.0 - confidence
    if not 0 < p < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    def rejected(epsilon: float) -> bool:
        return p_value(m=m, r=r, v=v, epsilon=epsilon, delta=delta) < p

    if not rejected(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejected(high):
        low, high = high, 2 * high
        if high > 1e3:
            return low
    while high - low > tol:
        middle = (low + high) / 2
        low, high = (middle, high) if rejected(middle) else (low, middle)
    return low


@dataclass(frozen=True)
class AuditGuess:
    """The best of several guess counts: how many guesses, how many right, the bound."""

    guesses: int
    correct: int
    epsilon: float


def audit_scores(
    scores: npt.NDArray[np.float64],
    included: npt.NDArray[np.bool_],
    *,
    delta: float,
    confidence: float = 0.95,
    guess_counts: tuple[int, ...] = (),
) -> AuditGuess:
    """Guess "in" for the top-k scores only (abstain elsewhere), for each k; keep the best bound.

    Trying several ``k`` on the same run is a multiple comparison: ``confidence``
    is split across them (Bonferroni), so the reported bound keeps its level.
    """
    m = len(scores)
    if included.shape != scores.shape:
        raise ValueError("scores and included must have the same length")
    counts = guess_counts or tuple(k for k in (10, 20, 50, 100, 200, 500) if k <= m)
    adjusted = 1 - (1 - confidence) / len(counts)
    order = np.argsort(-scores, kind="stable")
    best = AuditGuess(guesses=0, correct=0, epsilon=0.0)
    for k in counts:
        correct = int(included[order[:k]].sum())
        bound = epsilon_lower_bound(m=m, r=k, v=correct, delta=delta, confidence=adjusted)
        if bound > best.epsilon or best.guesses == 0:
            best = AuditGuess(guesses=k, correct=correct, epsilon=bound)
    return best
