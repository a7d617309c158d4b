"""A merchant as typed calls: train and evaluate on its own data, keep its users local.

This is the pure core behind the ClientApp: numpy arrays of *shared*
parameters in, numpy arrays of shared parameters and plain metrics out. The
user parameters are loaded from and saved to the merchant's own disk; they
never appear in a return value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from client.state import MerchantStore
from client.training import TrainConfig, TrainStats, train_local
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.evaluation import EvaluationResult, evaluate_model
from common.models.base import ModelConfig, Recommender, build_model
from common.seeding import numpy_rng, torch_generator

SharedArrays = dict[str, npt.NDArray[np.float32]]


@dataclass(frozen=True)
class TrainOutcome:
    shared: SharedArrays
    stats: TrainStats
    num_examples: int  # training interactions: the FedAvg weight


class Merchant:
    """One party of the federation, bound to its state directory."""

    def __init__(self, store: MerchantStore, model_config: ModelConfig, *, seed: int) -> None:
        self.store = store
        self.model_config = model_config
        self.seed = seed
        self._data: UserItemData | None = None

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def data(self) -> UserItemData:
        if self._data is None:
            self._data = self.store.load_data()
        return self._data

    def _model(self, shared: SharedArrays) -> Recommender:
        data = self.data
        model = build_model(
            self.model_config,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch_generator(self.seed, "user-init", self.name),
        )
        expected = {n: tuple(p.shape) for n, p in model.shared_parameters().items()}
        received = {n: tuple(a.shape) for n, a in shared.items()}
        if expected != received:
            raise ConfigError(
                f"Merchant {self.name}: the global model does not fit this merchant's model "
                f"(expected shared parameters {expected}, received {received}). "
                "Check that every party uses the same model settings and item catalog."
            )
        model.load_shared({n: torch.from_numpy(np.asarray(a)) for n, a in shared.items()})
        local = self.store.load_local()
        if local is not None:
            model.load_local(local)
        return model

    def train(
        self, shared: SharedArrays, config: TrainConfig, *, server_round: int
    ) -> TrainOutcome:
        model = self._model(shared)
        stats = train_local(
            model, self.data, config, rng=numpy_rng(self.seed, "train", self.name, server_round)
        )
        self.store.save_local(model.local_parameters())
        return TrainOutcome(
            shared={n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()},
            stats=stats,
            num_examples=self.data.num_train,
        )

    def evaluate(self, shared: SharedArrays, *, k: int, server_round: int) -> EvaluationResult:
        model = self._model(shared)
        return evaluate_model(
            model, self.data, k=k, rng=numpy_rng(self.seed, "evaluate", self.name, server_round)
        )
