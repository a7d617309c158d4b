"""Adding a model is its own file, one registry line and its tests: shown with a model
that fedrec does not ship.

:class:`DotModel` lives in this test module only. It is registered the way a plug-in
would be (:func:`common.models.registry.register_model`), then trained in a real
2-round Flower simulation (Ray), without and with user-level DP. Ray's workers are
other processes: they learn of the model from the ``FEDREC_MODELS`` environment
variable that the registration writes before Ray starts, and import the class by its
path.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import ClassVar

import pytest
import torch
from torch import nn

from common.config import parse_run_config
from common.data.partition import PartitionConfig
from common.errors import ConfigError
from common.models import LOCAL_VECTOR, ModelConfig
from common.models.local_vector import LocalVectorRecommender
from common.models.registry import (
    MODELS,
    MODELS_ENVIRONMENT,
    model_kinds,
    register_model,
    unregister_model,
)
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec

KIND = "toy-dot"
SHARED = {"items.weight", "item_bias.weight"}
SETTINGS = {
    "model": KIND,
    "num-server-rounds": 2,
    "embedding-dim": 8,
    "local-epochs": 1,
    "batch-users": 16,
}
USER_DP = {"privacy-unit": "user", "target-epsilon": 4.0, "target-delta": 1e-4}
SOURCE = DataSource(synthetic=SyntheticSpec(num_merchants=2, num_users=200, num_items=60, seed=3))


class DotModel(LocalVectorRecommender):
    """``score(u, i) = p_u . q_i + b_i``: user vectors are local, item tables shared."""

    LOCAL_PARAMETERS: ClassVar[tuple[str, ...]] = ("users.weight",)

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items)
        self.users = nn.Embedding(num_users, config.embedding_dim)  # (users, dim), local
        self.items = nn.Embedding(num_items, config.embedding_dim)  # (items, dim)
        self.item_bias = nn.Embedding(num_items, 1)  # (items, 1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.users(users) * self.items(items)).sum(-1)  # (n,)
        return dot + self.item_bias(items).squeeze(-1)

    def user_vectors(self) -> list[nn.Embedding]:
        return [self.users]

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.items]


def test_a_registered_model_reaches_processes_started_later() -> None:
    kind = "toy-dot-subprocess"
    register_model(kind, DotModel, summary="a dot product (test)")
    try:
        assert kind in model_kinds() and MODELS[kind].path == f"{__name__}:DotModel"
        assert kind in json.loads(os.environ[MODELS_ENVIRONMENT])
        code = (
            "import torch; from common.models import ModelConfig, build_model; "
            f"m = build_model(ModelConfig(kind={kind!r}, embedding_dim=4), num_users=3, "
            "num_items=5, generator=torch.Generator()); "
            "print(type(m).__name__, m.USER_REPRESENTATION, sorted(m.shared_parameters()))"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        assert out.stdout.split() == [
            "DotModel",
            LOCAL_VECTOR,
            "['item_bias.weight',",
            "'items.weight']",
        ]
    finally:
        unregister_model(kind)
    assert kind not in MODELS and MODELS_ENVIRONMENT not in os.environ
    with pytest.raises(ConfigError, match=f"Unknown model '{kind}'"):
        ModelConfig(kind=kind)


def test_registration_refuses_what_other_processes_could_not_use() -> None:
    class Local(DotModel):  # defined in a function: no import path reaches it
        pass

    with pytest.raises(ConfigError, match="defined at module level"):
        register_model("toy-local", Local, summary="")
    with pytest.raises(ConfigError, match="is not a Recommender subclass"):
        register_model("toy-path", "common.models.registry:ModelEntry", summary="")
    with pytest.raises(ConfigError, match="cannot import"):
        register_model("toy-missing", "common.models.nowhere:Model", summary="")
    with pytest.raises(ConfigError, match="already registered as common.models.mf"):
        register_model("mf", DotModel, summary="")
    with pytest.raises(ConfigError, match="built in"):
        unregister_model("mf")
    assert model_kinds() == ("mf", "neumf", "history", "sasrec", "ease")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 2-round federation of two merchants with DotModel: without DP and with it."""
    root = tmp_path_factory.mktemp("dot-model")
    register_model(KIND, DotModel, summary="a dot product (test)")
    try:
        out = {}
        for name, extra in (("plain", {}), ("private", USER_DP)):
            spec = SimulationSpec(
                run=parse_run_config(SETTINGS | extra),
                source=SOURCE,
                partition=PartitionConfig(scheme="natural"),
                run_dir=root / name,
                baselines=False,
                num_cpus=1,  # one Ray worker serves both merchants: the work is tiny
            )
            rounds: list = []
            results = simulate(spec, on_round=rounds.append)
            out[name] = (root / name, results, rounds)
        yield out
    finally:
        unregister_model(KIND)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["plain", "private"])
def test_the_new_model_trains_in_a_two_round_federation(runs, name) -> None:
    run_dir, results, rounds = runs[name]
    assert [r.round for r in rounds] == [1, 2]
    assert all(sorted(r.train) == ["merchant-00", "merchant-01"] for r in rounds)
    assert not any(r.failures for r in rounds)
    assert set(torch.load(run_dir / "global_model.pt")) == SHARED  # user vectors stay home
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["model"] == KIND
    overall = results["federated"]["overall"]
    assert overall["eval-users"] == sum(m["test_users"] for m in results["merchants"].values())
    assert 0.0 <= overall["ndcg@10"] <= overall["hr@10"] <= 1.0
    assert 0.5 < overall["auc"] < 1.0  # the item biases alone learn popularity


@pytest.mark.integration
def test_the_private_run_spends_a_positive_epsilon_within_its_budget(runs) -> None:
    _, results, _ = runs["private"]
    per_merchant = results["privacy"]["per_merchant"]
    assert sorted(per_merchant) == ["merchant-00", "merchant-01"]
    for spent in per_merchant.values():
        assert spent["privacy-unit"] == "user"
        assert 0.0 < spent["dp-epsilon"] <= USER_DP["target-epsilon"] + 1e-9
    _, plain, _ = runs["plain"]
    assert plain["privacy"]["per_merchant"] == {}
    assert math.isfinite(results["federated"]["overall"]["ndcg@10"])
