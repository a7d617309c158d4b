"""Privacy math: epsilon of a sequence of sampled-Gaussian events, and noise calibration.

Pure functions over :class:`PrivacyEvent` lists; the engine is Opacus's
accountants (RDP by default, PRV as an option), imported lazily because
importing Opacus takes seconds, and driven so that each distinct event is
computed once (:mod:`common.privacy.composition`). State (which events a merchant has spent)
lives in :mod:`common.privacy.accountant`, not here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from common.errors import ConfigError

# Opacus's default RDP orders plus larger ones (small sigmas at large epsilons need them),
# written out so an independent check can use exactly the same orders.
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 512]
)
PRV_EPS_ERROR = 0.01
MAX_NOISE_MULTIPLIER = 1e4


@dataclass(frozen=True)
class PrivacyEvent:
    """``steps`` applications of the sampled Gaussian mechanism.

    Each step Poisson-samples examples with probability ``sample_rate``, sums
    their clipped contributions (L2 norm at most C) and adds N(0, (sigma C)^2)
    noise, with sigma = ``noise_multiplier``. ``sample_rate == 1`` is the plain
    Gaussian mechanism (e.g. one release of noisy counts).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


# Each accountant fedrec offers: Opacus's ``create_accountant`` name -> its get_epsilon options.
# The names are common.privacy.config.ACCOUNTANTS (checked by the tests).
EPSILON_OPTIONS: dict[str, dict[str, Any]] = {
    "rdp": {"alphas": list(RDP_ORDERS)},
    "prv": {"eps_error": PRV_EPS_ERROR},
}


def epsilon_of(events: Sequence[PrivacyEvent], *, delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of all ``events`` composed, by Opacus's ``accountant``.

    The same float Opacus's accountant gives for the whole history, computed
    with each distinct piece once (:mod:`common.privacy.composition`) and
    remembered per history, so a release costs the same in round 200 as in round 1.
    """
    if accountant not in EPSILON_OPTIONS:
        raise ConfigError(
            f"Unknown accountant {accountant!r}: expected one of {', '.join(EPSILON_OPTIONS)}."
        )
    history = tuple((e.noise_multiplier, e.sample_rate, e.steps) for e in events if e.steps > 0)
    if not history:
        return 0.0
    return _epsilon(history, delta, accountant)


@lru_cache(maxsize=1024)
def _epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    from common.privacy.composition import prv_epsilon, rdp_epsilon

    with warnings.catch_warnings():
        # RDP: "optimal order is the largest alpha" only says a tighter bound may exist.
        # PRV: its q = 1 path takes log(0) on entries it then masks out.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if accountant == "rdp":
            return rdp_epsilon(history, delta=delta, orders=RDP_ORDERS)
        return prv_epsilon(history, delta=delta, eps_error=PRV_EPS_ERROR)


def opacus_epsilon(events: Sequence[PrivacyEvent], *, delta: float, accountant: str) -> float:
    """Epsilon by Opacus's own accountant handed the whole history: every event recomposed.

    What :func:`epsilon_of` computed before issue 20; kept as the reference the tests and
    ``benchmarks/accounting_time.py`` compare against.
    """
    from opacus.accountants import create_accountant

    history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in events if e.steps > 0]
    if not history:
        return 0.0
    engine = create_accountant(mechanism=accountant)
    engine.history = history
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(engine.get_epsilon(delta=delta, **EPSILON_OPTIONS[accountant]))


def calibrate_noise(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str,
    prior: Sequence[PrivacyEvent] = (),
    rel_tol: float = 1e-3,
) -> float:
    """The smallest sigma (to ``rel_tol`` in epsilon) such that ``prior`` followed by
    ``steps`` steps at ``sample_rate`` costs at most ``target_epsilon`` at ``delta``.
    """
    spent = epsilon_of(prior, delta=delta, accountant=accountant)
    if spent >= target_epsilon:
        raise ConfigError(
            f"The privacy budget epsilon={target_epsilon:g} at delta={delta:g} is already used "
            f"up ({spent:.4g}) before training; raise target-epsilon or lower "
            "count-epsilon-share."
        )

    def cost(sigma: float) -> float:
        event = PrivacyEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)
        return epsilon_of([*prior, event], delta=delta, accountant=accountant)

    return smallest_noise(
        cost,
        target_epsilon=target_epsilon,
        rel_tol=rel_tol,
        too_small=f"epsilon={target_epsilon:g} at delta={delta:g} needs a noise multiplier above "
        f"{MAX_NOISE_MULTIPLIER:g} for {steps} steps at q={sample_rate:.4g}; raise the "
        "budget or train fewer steps.",
    )


def smallest_noise(
    cost: Callable[[float], float],
    *,
    target_epsilon: float,
    too_small: str,
    rel_tol: float = 1e-3,
) -> float:
    """The smallest noise multiplier sigma (to ``rel_tol`` in epsilon) with
    ``cost(sigma) <= target_epsilon``, for any accountant's ``cost`` (epsilon decreasing in
    sigma): doubling from 1, then bisection. Above :data:`MAX_NOISE_MULTIPLIER` it raises
    :class:`ConfigError` with ``too_small`` (the budget is too small to train with).

    The one calibration behind user-level DP-SGD (Opacus accountants, :func:`calibrate_noise`)
    and client-level DP (Flower's accountant, ``server.client_privacy``).
    """
    low, high = 0.0, 1.0
    while cost(high) > target_epsilon:
        low, high = high, 2 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise ConfigError(too_small)
    while True:
        if target_epsilon - cost(high) <= rel_tol * target_epsilon or high - low < 1e-9:
            return high
        middle = (low + high) / 2
        if cost(middle) <= target_epsilon:
            high = middle
        else:
            low = middle


def gaussian_noise_multiplier(*, epsilon: float, delta: float, accountant: str) -> float:
    """Sigma of one Gaussian-mechanism release (sensitivity 1) costing ``epsilon`` at ``delta``."""
    return calibrate_noise(
        target_epsilon=epsilon, delta=delta, sample_rate=1.0, steps=1, accountant=accountant
    )
