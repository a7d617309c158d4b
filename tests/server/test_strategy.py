"""The strategy table is the one list: the names users choose from, each building its class."""

from __future__ import annotations

import pytest

from common.choices import SERVER_STATE_STRATEGIES, STRATEGIES
from common.config import FederationConfig, TrainConfig
from server.strategy import STRATEGY_BUILDERS, build_strategy


def test_the_builders_are_the_strategies_users_choose_from() -> None:
    assert tuple(STRATEGY_BUILDERS) == tuple(STRATEGIES)
    assert SERVER_STATE_STRATEGIES.issubset(STRATEGIES)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("fedavg", "FedAvg"), ("fedavgm", "FedAvgM"), ("fedadam", "FedAdam"), ("fedprox", "FedProx")],
)
def test_each_strategy_builds_its_flower_class(name: str, cls: str) -> None:
    # Prepare
    config = FederationConfig(strategy=name, fedavgm_momentum=0.5, min_train_nodes=2)
    train = TrainConfig(proximal_mu=0.25)
    # Execute
    strategy = build_strategy(config, train, num_nodes=5)
    # Assert
    assert type(strategy).__name__ == cls
    assert strategy.min_train_nodes == 2
    assert strategy.min_available_nodes == 2
    if name == "fedavgm":
        assert strategy.server_momentum == pytest.approx(0.5)  # type: ignore[attr-defined]
    if name == "fedprox":
        assert strategy.proximal_mu == pytest.approx(0.25)  # type: ignore[attr-defined]
