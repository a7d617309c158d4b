"""Names a user chooses between, listed once and import-light (the CLIs read them).

Models have their own registry (:mod:`common.models.registry`); privacy units
and accountants live with the privacy settings (:mod:`common.privacy.config`).
"""

from __future__ import annotations

from typing import Final

# How users are split into parties (common.data.partition): by merchant_id, evenly at random,
# non-IID by taste, or one user per party (cross-device).
PARTITION_SCHEMES: Final = ("natural", "iid", "dirichlet", "device")
# Aggregation strategies: Flower's own classes, one builder each in
# server.strategy.STRATEGY_BUILDERS (same names, same order; tests/server/test_strategy.py).
STRATEGIES: Final[dict[str, str]] = {
    "fedavg": "FedAvg: the weighted mean of the merchants' updates",
    "fedavgm": "FedAvgM: a server step and momentum on the mean update",
    "fedadam": "FedAdam: server-side Adam on the mean update",
    "fedprox": "FedProx: FedAvg with a proximal term in local training",
}
# Strategies that keep moments at the coordinator: checkpointed, and refused with SecAgg+
# (their state would be built from individual updates SecAgg+ hides).
SERVER_STATE_STRATEGIES: Final = frozenset({"fedavgm", "fedadam"})
LOSSES: Final[dict[str, str]] = {
    "bce": "implicit feedback: observed items vs sampled negatives",
    "mse": "explicit ratings (the value column)",
}
SCHEDULES: Final[dict[str, str]] = {
    "constant": "the same local learning rate every round",
    "cosine": "a cosine decay of the local learning rate over the rounds",
}
