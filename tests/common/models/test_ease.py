"""EASE over a shared Gram: scores, the item prior's order, and what it refuses."""

import numpy as np
import pytest
import torch

from common.config import parse_run_config
from common.errors import ConfigError
from common.models import ModelConfig, build_model
from common.models.prior import ItemPrior
from common.privacy.cooccurrence import ease_weights

CONFIG = ModelConfig(kind="ease", ease_items=4, ease_ridge=0.5)


def _model(num_users=2, num_items=8):
    model = build_model(
        CONFIG, num_users=num_users, num_items=num_items, generator=torch.Generator()
    )
    items = np.array([1, 3, 4, 6])
    rng = np.random.default_rng(0)
    x = (rng.random((30, 4)) < 0.5).astype(np.float32)
    gram = x.T @ x
    model.load_shared(
        {
            "items": torch.as_tensor(items, dtype=torch.float32),
            "gram": torch.as_tensor(gram),
            "noise": torch.zeros(1),
        }
    )
    return model, items, gram


def test_scores_are_the_users_items_times_eases_weights():
    model, items, gram = _model()
    # user 0 did items 1, 3 and 5 (5 is not trained); user 1 did item 6 twice
    indptr = np.array([0, 3, 5])
    model.bind_histories(indptr, np.array([1, 3, 5, 6, 6]))
    scores = model.score_all(torch.tensor([0, 1])).numpy()
    weights = ease_weights(gram, ridge=0.5)
    marks = np.array([[1, 1, 0, 0], [0, 0, 0, 1]], dtype=float)  # distinct trained items
    assert np.allclose(scores[:, items], marks @ weights, atol=1e-5)
    untrained = np.setdiff1d(np.arange(8), items)
    assert np.all(scores[:, untrained].max(1) < scores[:, items].min(1))
    prior = ItemPrior(counts=np.arange(8, dtype=float), trained=items)
    ordered = prior.apply(torch.as_tensor(scores)).numpy()
    assert np.all(ordered[:, untrained].max(1) < ordered[:, items].min(1))
    assert np.argmax(ordered[0, untrained]) == len(untrained) - 1  # the most counted first


def test_no_gradient_training_no_local_parameters_and_spectral_item_vectors():
    model, items, _ = _model()
    assert model.local_parameters() == {}
    assert set(model.shared_parameters()) == {"items", "gram", "noise"}
    with pytest.raises(ConfigError, match="not trained by gradient"):
        model.user_losses(None, None)
    (table,) = model.item_vectors()
    vectors = table.weight.detach().numpy()
    assert vectors.shape == (9, 4)  # the catalog plus the padding row
    assert np.abs(vectors[items]).sum() > 0
    assert np.all(vectors[np.setdiff1d(np.arange(9), items)] == 0)


def test_a_run_of_ease_needs_user_level_dp_counts_and_one_round():
    with pytest.raises(ConfigError, match="privacy-unit=user"):
        parse_run_config({"model": "ease", "num-server-rounds": 1})
    with pytest.raises(ConfigError, match="num-server-rounds=1"):
        parse_run_config(
            {"model": "ease", "privacy-unit": "user", "target-epsilon": 3.0, "num-server-rounds": 4}
        )
    run = parse_run_config(
        {"model": "ease", "privacy-unit": "user", "target-epsilon": 3.0, "num-server-rounds": 1}
    )
    assert run.model.ease_items == 1000
    with pytest.raises(ConfigError, match="ease-ridge"):
        ModelConfig(kind="ease", ease_ridge=0.0)
