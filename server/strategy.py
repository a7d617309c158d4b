"""Build the aggregation strategy: Flower's own FedAvg, FedAvgM, FedAdam or FedProx.

:data:`STRATEGY_BUILDERS` is the table of strategies, one builder each. The
names users choose from are :data:`common.choices.STRATEGIES` (import-light,
for the CLIs); a test holds the two to the same names in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from common.config import FederationConfig, TrainConfig
from common.constants import ARRAYS_KEY, CONFIG_KEY, WEIGHT_KEY

if TYPE_CHECKING:
    from flwr.serverapp.strategy import FedAvg


def train_sample_floor(config: FederationConfig, *, num_nodes: int) -> int:
    """Fewest nodes FedAvg asks to train in a round (it asks max(this, fraction x nodes))."""
    return max(1, min(config.min_train_nodes, num_nodes))


def train_sample_size(config: FederationConfig, *, num_nodes: int) -> int:
    """Nodes FedAvg asks to train in a round, exactly as ``FedAvg.configure_train`` counts."""
    return max(
        int(num_nodes * config.fraction_train), train_sample_floor(config, num_nodes=num_nodes)
    )


def build_strategy(config: FederationConfig, train: TrainConfig, *, num_nodes: int) -> FedAvg:
    """A Flower strategy that aggregates shared parameters weighted by ``num-examples``.

    The weight is the coordinator's, not the merchant's word:
    :mod:`server.rounds.update_bounds` sets it to 1 for every accepted reply under
    privacy (uniform FedAvg) and bounds the reported count otherwise.

    FedProx needs ``proximal-mu > 0`` in the training settings (the merchants
    apply the proximal term; the strategy only forwards mu).
    """
    min_train = train_sample_floor(config, num_nodes=num_nodes)
    common: dict[str, Any] = {
        "fraction_train": config.fraction_train,
        "fraction_evaluate": config.fraction_evaluate,
        "min_train_nodes": min_train,
        # Flower's sampling waits, without a time limit, until min_available_nodes are
        # online. A round can run with min_train nodes, so that is all it waits for:
        # min-nodes only gates the start of a run (server.rounds.admission.wait_for_nodes).
        "min_evaluate_nodes": min_train,
        "min_available_nodes": min_train,
        "weighted_by_key": WEIGHT_KEY,
        "arrayrecord_key": ARRAYS_KEY,
        "configrecord_key": CONFIG_KEY,
    }
    return STRATEGY_BUILDERS[config.strategy](common, config, train)


# A builder gets the settings every strategy shares (Flower's keyword arguments) and adds its own.
StrategyBuilder = Callable[[Mapping[str, Any], FederationConfig, TrainConfig], "FedAvg"]


def _fedavg(common: Mapping[str, Any], config: FederationConfig, train: TrainConfig) -> FedAvg:
    from flwr.serverapp.strategy import FedAvg

    return FedAvg(**common)


def _fedavgm(common: Mapping[str, Any], config: FederationConfig, train: TrainConfig) -> FedAvg:
    from flwr.serverapp.strategy import FedAvgM

    return FedAvgM(
        **common,
        server_learning_rate=config.fedavgm_learning_rate,
        server_momentum=config.fedavgm_momentum,
    )


def _fedadam(common: Mapping[str, Any], config: FederationConfig, train: TrainConfig) -> FedAvg:
    from flwr.serverapp.strategy import FedAdam

    return FedAdam(**common, eta=config.server_learning_rate, eta_l=train.learning_rate)


def _fedprox(common: Mapping[str, Any], config: FederationConfig, train: TrainConfig) -> FedAvg:
    from flwr.serverapp.strategy import FedProx

    return FedProx(**common, proximal_mu=train.proximal_mu)


# The one table of strategies: same names, same order as common.choices.STRATEGIES.
STRATEGY_BUILDERS: dict[str, StrategyBuilder] = {
    "fedavg": _fedavg,
    "fedavgm": _fedavgm,
    "fedadam": _fedadam,
    "fedprox": _fedprox,
}
