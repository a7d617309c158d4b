"""PerUserClipper on SASRec (attention, LayerNorm, positions, event types, a tied
sampled-softmax output) against the one-user-at-a-time oracle: one backward per user,
then clip and sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.training import captures
from client.training.clipping import PerUserClipper
from client.training.loop import per_user_loss
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.models import ModelConfig, build_model
from tests.client.training.test_clipping import _oracle
from tests.conftest import make_events

NUM_ITEMS = 9
# Each user's items in time order, the last held out: different lengths (the first longer
# than history-max), one user with a single training item (nothing to predict: zero gradient).
HISTORIES = ((0, 1, 2, 3, 4, 5, 6), (2, 7, 4, 8), (8, 3), (3, 1, 4, 5, 0), (6, 0, 2))


def _data():
    rows = [
        (f"u{u}", f"i{item}", t)
        for u, items in enumerate(HISTORIES)
        for t, item in enumerate(items)
    ]
    kinds = [("view", "cart", "purchase")[(i * 7) % 3] for i in range(len(rows))]
    return build_user_item_data(
        make_events(rows, event_types=kinds),
        ItemCatalog.from_keys([f"i{j}" for j in range(NUM_ITEMS)]),
    )


def _model(*, blocks=2, heads=2, negatives=4, seed=0):
    data = _data()
    config = ModelConfig(
        kind="sasrec",
        embedding_dim=8,
        sasrec_blocks=blocks,
        sasrec_heads=heads,
        sasrec_negatives=negatives,
        dropout=0.0,  # the oracle replays the forward: no random masks
        history_max=5,
    )
    model = build_model(
        config,
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(seed),
    )
    model.bind(data)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # every LayerNorm scale and every bias away from its start
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.3)
    return model, data


@pytest.mark.parametrize("blocks, heads", [(1, 1), (2, 2)])
@pytest.mark.parametrize("max_norm", [1e-3, "median", 1e6])
def test_transformer_clipping_matches_per_user_oracle(blocks, heads, max_norm):
    model, data = _model(blocks=blocks, heads=heads)
    config = TrainConfig()
    users = np.arange(data.num_users, dtype=np.int64)
    batch = model.make_batch(data, users, config, rng=np.random.default_rng(3))
    assert batch.negatives is not None and batch.negatives.shape == (len(users), 4)
    # A user's negatives include their own items: one row, read as input and as output.
    seen = [set(model.sequences[u].tolist()) & set(batch.negatives[u].tolist()) for u in users]
    assert any(seen)

    def loss_fn():
        return per_user_loss(model, batch, config)

    if max_norm == "median":
        _, norms, _ = _oracle(model, loss_fn, batch.size, 1e6)
        max_norm = float(norms[norms > 0].median())
    clipped, norms, _ = _oracle(model, loss_fn, batch.size, max_norm)
    result = PerUserClipper(model, max_norm=max_norm).backward(
        loss_fn, row_slot=batch.row_slot, num_users=batch.size
    )
    assert float(norms[2]) == 0.0  # the one-item user has no target
    assert (norms[[0, 1, 3, 4]] > 0).all()
    torch.testing.assert_close(result.norms, norms, atol=1e-5, rtol=1e-5)
    shared = model.shared_parameters()
    assert {n.split(".")[0] for n in shared} == {
        "item_embedding",
        "position",
        "event",
        "blocks",
        "norm",
    }
    assert model.event_sequences[0, :3].tolist() != [model.no_event] * 3  # typed inputs
    for name, param in shared.items():
        torch.testing.assert_close(param.grad, clipped[name], atol=1e-5, rtol=1e-5, msg=name)
    padding = model.item_embedding.weight.grad[model.pad]
    assert float(padding.abs().max()) == 0.0  # the pad row never learns


def test_full_softmax_sasrec_is_refused_by_private_training():
    model, _ = _model(negatives=0)
    assert "sasrec-negatives" in model.clipping_problem()
    assert _model(negatives=4)[0].clipping_problem() is None


def test_transformer_clipping_in_one_user_blocks_matches_the_oracle(monkeypatch):
    monkeypatch.setattr(captures, "LINEAR_CHUNK_FLOATS", 1)  # every linear block: one user
    model, data = _model()
    config = TrainConfig()
    batch = model.make_batch(
        data, np.arange(data.num_users, dtype=np.int64), config, rng=np.random.default_rng(5)
    )

    def loss_fn():
        return per_user_loss(model, batch, config)

    clipped, norms, _ = _oracle(model, loss_fn, batch.size, 0.5)
    result = PerUserClipper(model, max_norm=0.5).backward(
        loss_fn, row_slot=batch.row_slot, num_users=batch.size
    )
    torch.testing.assert_close(result.norms, norms, atol=1e-5, rtol=1e-5)
    for name, param in model.shared_parameters().items():
        torch.testing.assert_close(param.grad, clipped[name], atol=1e-5, rtol=1e-5, msg=name)
