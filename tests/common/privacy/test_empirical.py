"""The one-run epsilon lower bound (Steinke, Nasr & Jagielski 2023): numbers that can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from common.privacy.empirical import audit_scores, epsilon_lower_bound, p_value


def test_pure_dp_p_value_is_the_binomial_tail():
    q = 1 / (1 + math.exp(-1.0))
    assert p_value(m=1000, r=100, v=70, epsilon=1.0, delta=0.0) == pytest.approx(
        stats.binom.sf(69, 100, q)
    )


def test_delta_only_adds_to_the_p_value():
    pure = p_value(m=1000, r=100, v=70, epsilon=0.5, delta=0.0)
    approx = p_value(m=1000, r=100, v=70, epsilon=0.5, delta=1e-5)
    assert approx > pure


def test_bound_is_where_the_p_value_crosses_the_level():
    eps = epsilon_lower_bound(m=1000, r=100, v=100, delta=0.0, confidence=0.95)
    # All 100 right: P[Binom(100, q) = 100] = q^100 < 0.05  <=>  q > 0.05^(1/100).
    q = 0.05 ** (1 / 100)
    assert eps == pytest.approx(math.log(q / (1 - q)), abs=1e-3)
    assert p_value(m=1000, r=100, v=100, epsilon=eps, delta=0.0) < 0.05
    assert p_value(m=1000, r=100, v=100, epsilon=eps + 0.01, delta=0.0) >= 0.05


def test_chance_level_guessing_gives_no_bound():
    assert epsilon_lower_bound(m=1000, r=100, v=50, delta=1e-6) == 0.0


def test_more_correct_guesses_give_a_larger_bound():
    bounds = [epsilon_lower_bound(m=1000, r=200, v=v, delta=1e-6) for v in (120, 150, 180, 200)]
    assert bounds == sorted(bounds) and bounds[0] > 0


def test_a_dp_mechanism_is_caught_above_its_epsilon_at_most_at_the_stated_rate():
    # Randomized response at eps = 1 is exactly 1-DP; at 95% confidence the audit may exceed
    # 1 in at most 5% of runs (seeded, so this count is fixed).
    rng = np.random.default_rng(0)
    q = 1 / (1 + math.exp(-1.0))
    trials, above = 200, 0
    for _ in range(trials):
        included = rng.random(2000) < 0.5
        truthful = rng.random(2000) < q
        scores = np.where(truthful == included, 1.0, 0.0) + rng.random(2000) * 1e-3
        above += audit_scores(scores, included, delta=0.0).epsilon > 1.0
    assert above <= 0.05 * trials


def test_perfect_separation_is_caught():
    rng = np.random.default_rng(1)
    included = rng.random(1000) < 0.5
    scores = included.astype(float) + rng.random(1000) * 0.1
    result = audit_scores(scores, included, delta=1e-6)
    assert result.correct == result.guesses and result.epsilon > 2.0
