"""The model registry: the one list of models, and a model added from outside the package."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from common.errors import ConfigError
from common.models import ModelConfig, Recommender, build_model
from common.models.local_vector import LocalVectorRecommender
from common.models.registry import MODELS, ModelEntry, model_class, model_kinds


class ToyModel(LocalVectorRecommender):
    """A dot product of a user and an item table: registered by this test, not by fedrec."""

    LOCAL_PARAMETERS = ("users.weight",)

    def __init__(self, config: ModelConfig, *, num_users: int, num_items: int) -> None:
        super().__init__(num_users=num_users, num_items=num_items)
        self.users = nn.Embedding(num_users, config.embedding_dim)
        self.items = nn.Embedding(num_items, config.embedding_dim)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.users(users) * self.items(items)).sum(-1)

    def user_vectors(self) -> list[nn.Embedding]:
        return [self.users]

    def item_vectors(self) -> list[nn.Embedding]:
        return [self.items]


def test_every_registered_model_builds_and_unknown_kinds_name_the_registry() -> None:
    assert model_kinds() == ("mf", "neumf", "history", "sasrec", "ease")
    for kind in MODELS:
        model = build_model(
            ModelConfig(kind=kind), num_users=3, num_items=5, generator=torch.Generator()
        )
        assert isinstance(model, Recommender) and isinstance(model, model_class(kind))
    with pytest.raises(ConfigError, match="Unknown model 'bert4rec': expected one of mf, neumf"):
        ModelConfig(kind="bert4rec")


def test_a_model_defined_elsewhere_needs_only_its_registry_entry(monkeypatch) -> None:
    monkeypatch.setitem(MODELS, "toy", ModelEntry(f"{__name__}:ToyModel", "a test model"))
    config = ModelConfig(kind="toy", embedding_dim=4)
    model = build_model(
        config, num_users=3, num_items=5, generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(model, ToyModel)
    assert set(model.shared_parameters()) == {"items.weight"}  # users stay local
    assert model.items.weight.std() > 0  # build_model's seeded initialisation ran
    scores = model.score_all(torch.tensor([0, 2]))
    assert scores.shape == (2, 5)


def test_the_cli_reads_model_names_without_importing_torch() -> None:
    code = "import sys, simulations.cli, server.ops.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
