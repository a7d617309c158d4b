"""Client-level DP for cross-device federations (one user per client), at the coordinator.

Each device's model update is clipped to L2 norm C and Gaussian noise is added
to the aggregate by Flower's ``DifferentialPrivacyServerSideFixedClipping``
wrapper around FedAvg (uniform weights), and every release is composed in
Flower's RDP accountant (``flwr.supercore.privacy_accounting``, backed by
Google's dp-accounting). Flower's accountant supports this wrapper only with
``no-amplification`` accounting: epsilon is computed as if every device took
part in every round, so the sampling of devices is not used to lower it
(a correct, conservative bound). sigma is calibrated once from the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError
from common.privacy.config import PrivacyConfig

if TYPE_CHECKING:
    from flwr.serverapp.strategy import FedAvg

CLIENT_ACCOUNTANT = "Flower RdpAccountant (dp-accounting RDP), no sampling amplification"
CLIENT_UNIT = "one client (a device holding one user's interactions)"


def _accountant(privacy: PrivacyConfig, *, population: int, max_epsilon: float | None) -> Any:
    from flwr.supercore.privacy_accounting import (
        NeighboringRelation,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting import (
        PrivacyConfig as FlowerPrivacyConfig,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    return RdpAccountant(
        FlowerPrivacyConfig(
            target_delta=privacy.delta,
            population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
            max_epsilon=max_epsilon,
        )
    )


def client_epsilon(
    privacy: PrivacyConfig, *, sigma: float, rounds: int, sampled: int, population: int
) -> float:
    """Epsilon at ``privacy.delta`` after ``rounds`` releases, by Flower's accountant."""
    from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

    accountant = _accountant(privacy, population=population, max_epsilon=None)
    event = GaussianPrivacyEvent(
        noise_multiplier=sigma, sample_size=sampled, population_size=population
    )
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(privacy.delta))


def calibrate_client_noise(
    privacy: PrivacyConfig, *, rounds: int, sampled: int, population: int
) -> float:
    """The smallest sigma (to 0.1% in epsilon) that spends at most the target in ``rounds``."""
    target = privacy.target_epsilon

    def cost(sigma: float) -> float:
        return client_epsilon(
            privacy, sigma=sigma, rounds=rounds, sampled=sampled, population=population
        )

    low, high = 0.0, 1.0
    while cost(high) > target:
        low, high = high, 2 * high
        if high > 1e4:
            raise ConfigError(f"epsilon={target:g} is too small for {rounds} client-level rounds.")
    while target - cost(high) > 1e-3 * target and high - low > 1e-9:
        middle = (low + high) / 2
        if cost(middle) <= target:
            high = middle
        else:
            low = middle
    return high


@dataclass(frozen=True)
class ClientDP:
    """The coordinator's client-level DP plan, and the strategy wrapper that carries it out."""

    noise_multiplier: float
    clipping_norm: float
    sampled: int  # devices per round
    population: int  # devices in the federation
    strategy: Any  # DifferentialPrivacyServerSideFixedClipping around FedAvg

    def spent(self) -> dict[str, Any]:
        spent = self.strategy.privacy_spent()
        return {
            "epsilon": float(spent.epsilon) if spent is not None else 0.0,
            "delta": float(spent.delta) if spent is not None else 0.0,
            "releases": int(spent.num_releases) if spent is not None else 0,
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "sampled_per_round": self.sampled,
            "population": self.population,
            "unit": CLIENT_UNIT,
            "accountant": CLIENT_ACCOUNTANT,
        }


def build_client_dp(
    inner: FedAvg, privacy: PrivacyConfig, *, rounds: int, sampled: int, population: int
) -> ClientDP:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    sigma = calibrate_client_noise(privacy, rounds=rounds, sampled=sampled, population=population)
    accountant = _accountant(privacy, population=population, max_epsilon=privacy.budget)
    strategy = DifferentialPrivacyServerSideFixedClipping(
        inner,
        noise_multiplier=sigma,
        clipping_norm=privacy.client_clip,
        num_sampled_clients=sampled,
        accountant=accountant,
    )
    return ClientDP(
        noise_multiplier=sigma,
        clipping_norm=privacy.client_clip,
        sampled=sampled,
        population=population,
        strategy=strategy,
    )
