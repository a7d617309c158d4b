"""Client-level DP for cross-device federations (one user per client), at the coordinator.

Each device's model update is clipped to L2 norm C and Gaussian noise is added
to the aggregate by Flower's ``DifferentialPrivacyServerSideFixedClipping``
wrapper around FedAvg (uniform weights), and every release is composed in
Flower's RDP accountant (``flwr.supercore.privacy_accounting``, backed by
Google's dp-accounting). Flower's accountant supports this wrapper only with
``no-amplification`` accounting: epsilon is computed as if every device took
part in every round, so the sampling of devices is not used to lower it
(a correct, conservative bound). sigma is calibrated once from the target.

A run that is resumed keeps its plan and its account: the checkpoint holds
:meth:`ClientDP.state` (sigma, clip, sample and population sizes, and the
accountant's own ``state_dict``), and :func:`build_client_dp` given it
restores the accountant instead of starting a fresh one, so epsilon after a
resume equals the uninterrupted run's. Each noised release is also written
to the federation ledger (``client-dp-release``), where ``fedrec audit
verify`` recomputes it (:mod:`common.privacy.client_release_check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.errors import ConfigError
from common.privacy.accounting import smallest_noise
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

    def cost(sigma: float) -> float:
        return client_epsilon(
            privacy, sigma=sigma, rounds=rounds, sampled=sampled, population=population
        )

    target = privacy.target_epsilon
    return smallest_noise(
        cost,
        target_epsilon=target,
        too_small=f"epsilon={target:g} is too small for {rounds} client-level rounds.",
    )


@dataclass(frozen=True)
class ClientDP:
    """The coordinator's client-level DP plan, and the strategy wrapper that carries it out."""

    noise_multiplier: float
    clipping_norm: float
    sampled: int  # devices per round
    population: int  # devices in the federation
    strategy: Any  # DifferentialPrivacyServerSideFixedClipping around FedAvg

    @property
    def releases(self) -> int:
        """Noised aggregates composed so far (no epsilon computed)."""
        return int(self.strategy.accountant.num_releases)

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

    def count_recorded(self, recorded: list[dict[str, Any]]) -> int:
        """Compose the ledger's releases this account does not hold yet; how many it added.

        ``recorded``: the run's ``client-dp-release`` bodies, in order. A coordinator that
        stopped after writing a release but before its checkpoint resumes from the earlier
        checkpoint; the release still happened, so it is counted here.
        """
        from flwr.supercore.privacy_accounting import GaussianPrivacyEvent

        accountant = self.strategy.accountant
        extra = recorded[self.releases :]
        for body in extra:
            accountant.compose(
                GaussianPrivacyEvent(
                    noise_multiplier=float(body["noise_multiplier"]),
                    sample_size=int(body["sample_size"]),
                    population_size=int(body["population_size"]),
                )
            )
        return len(extra)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume this plan and its account exactly."""
        return {
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "sampled": self.sampled,
            "population": self.population,
            "accountant": self.strategy.accountant.state_dict(),
        }


def build_client_dp(
    inner: FedAvg,
    privacy: PrivacyConfig,
    *,
    rounds: int,
    sampled: int,
    population: int,
    restore: dict[str, Any] | None = None,
) -> ClientDP:
    """The plan for a new run, or (``restore``: a checkpoint's :meth:`ClientDP.state`) the plan
    and the account of the run being resumed, whatever nodes are connected now."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    if restore is not None and not restore:
        raise ConfigError(
            "The checkpoint holds no client-level privacy account (it was written before "
            "fedrec checkpointed one): resuming would count epsilon from zero again. Start a "
            "new run; the releases already made stay in the federation ledger."
        )
    if restore:
        try:
            sigma = float(restore["noise_multiplier"])
            sampled, population = int(restore["sampled"]), int(restore["population"])
            clip = float(restore["clipping_norm"])
            state = dict(restore["accountant"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"The checkpoint's client-level DP state is incomplete ({exc!r} missing or "
                "malformed): the run cannot resume with its privacy account. Start a new run."
            ) from exc
        if clip != privacy.client_clip:
            raise ConfigError(
                f"The checkpoint clipped client updates to {clip:g} but client-clip is now "
                f"{privacy.client_clip:g}: resume with the original client-clip."
            )
    else:
        sigma = calibrate_client_noise(
            privacy, rounds=rounds, sampled=sampled, population=population
        )
        state = {}
    accountant = _accountant(privacy, population=population, max_epsilon=privacy.budget)
    if state:
        try:
            accountant.load_state_dict(state)
        except ValueError as exc:
            raise ConfigError(
                f"The checkpoint's client-level privacy account does not load ({exc}): "
                "resume with the original privacy settings, or start a new run."
            ) from exc
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
