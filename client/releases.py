"""What a merchant releases, as typed values: shared arrays, counts and the privacy report.

Plain frozen dataclasses, no Flower: :mod:`client.merchant` returns them and
:mod:`client.messages` turns them into records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from client.training.loop import TrainStats
from common.constants import (
    DP_CLIP,
    DP_COUNT_NOISE,
    DP_DELTA,
    DP_EPSILON,
    DP_EPSILON_MAX,
    DP_NOISE,
    DP_SAMPLE_RATE,
    DP_STEPS,
)
from common.privacy.accountant import PrivacyAccount
from common.privacy.accounting import PrivacyEvent

SharedArrays = dict[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class PrivacyReport:
    """What a merchant has spent, with every assumption behind the number."""

    epsilon: float
    delta: float
    epsilon_max: float
    noise_multiplier: float
    count_noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    unit: str
    accountant: str

    @classmethod
    def of(cls, account: PrivacyAccount, *, budget: float) -> PrivacyReport:
        plan = account.plan
        return cls(
            epsilon=account.epsilon(),
            delta=plan.delta,
            epsilon_max=budget,
            noise_multiplier=plan.noise_multiplier,
            count_noise_multiplier=plan.count_noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            sample_rate=plan.sample_rate,
            steps=account.steps,
            unit=plan.unit,
            accountant=plan.accountant,
        )

    def metrics(self) -> dict[str, float]:
        """The report's numbers under their reply metric names (its words travel as fields)."""
        return {
            DP_EPSILON: self.epsilon,
            DP_DELTA: self.delta,
            DP_EPSILON_MAX: self.epsilon_max,
            DP_NOISE: self.noise_multiplier,
            DP_COUNT_NOISE: self.count_noise_multiplier,
            DP_CLIP: self.max_grad_norm,
            DP_SAMPLE_RATE: self.sample_rate,
            DP_STEPS: self.steps,
        }


@dataclass(frozen=True)
class TrainOutcome:
    shared: SharedArrays
    stats: TrainStats
    num_examples: int  # the FedAvg weight: training interactions, or 1 under DP (uniform)
    privacy: PrivacyReport | None = None
    reservation: int | None = None  # the ledger's reserve entry, committed when sent


@dataclass(frozen=True)
class Release:
    """One DP release about to happen: which, when, at what cost, against which budget."""

    run: str
    server_round: int
    kind: str  # EVENT_ITEM_COUNTS or EVENT_DP_SGD
    event: PrivacyEvent
    budget: float
    secagg: bool = False  # the release reaches the coordinator only inside a SecAgg+ sum


@dataclass(frozen=True)
class CountsRelease:
    counts: npt.NDArray[np.float64]
    privacy: PrivacyReport
    reservation: int  # the ledger's reserve entry, committed when sent
    noise_multiplier: float = 0.0  # this release's sigma (sensitivity 1)
