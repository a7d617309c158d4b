"""The history model on literal data: hand-computed user vectors, scores and losses."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from client.training.loop import train_local
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.evaluation import evaluate_model
from common.models import ModelConfig, build_model
from common.models.batches import build_sequence_batch
from common.models.history import HistoryModel
from tests.conftest import make_events

ITEMS = [f"i{j}" for j in range(3)]


def _model(**config) -> tuple[HistoryModel, object]:
    # u0 saw i0, i2, i1 (in time order) and i0 again last (held out); u1 saw i2 then i1.
    rows = [("u0", "i0", 1), ("u0", "i2", 2), ("u0", "i1", 3), ("u1", "i2", 1), ("u1", "i1", 5)]
    data = build_user_item_data(make_events(rows), ItemCatalog.from_keys(ITEMS), hold_out=False)
    settings = {"kind": "history", "embedding_dim": 2, "history_window": 2, "history_decay": 0.5}
    model = build_model(
        ModelConfig(**(settings | config)),
        num_users=2,
        num_items=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(model, HistoryModel)
    model.bind(data)
    with torch.no_grad():
        model.history_long.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [2, 2], [0, 0]]))
        model.history_short.weight.copy_(torch.tensor([[0, 1.0], [1, 0], [0, 2], [0, 0]]))
        model.item_out.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1]]))
        model.item_out.bias.copy_(torch.tensor([0.0, 0.5, -1.0]))
        model.user_embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, -1.0]]))
    return model, data


def test_only_the_user_residual_is_local_and_it_starts_at_zero():
    model = build_model(
        ModelConfig(kind="history", embedding_dim=2),
        num_users=2,
        num_items=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert list(model.local_parameters()) == ["user_embedding.weight"]
    assert sorted(model.shared_parameters()) == [
        "history_long.weight",
        "history_short.weight",
        "item_out.bias",
        "item_out.weight",
    ]
    assert float(model.user_embedding.weight.detach().abs().sum()) == 0.0
    assert "sequences" not in model.state_dict()  # histories never leave the party


def test_user_vectors_and_scores_by_hand():
    model, _ = _model()
    # u0, history i0 i2 i1: long = mean(L0, L2, L1) = ((1+2+0)/3, (0+2+1)/3) = (1, 1);
    # short = S[i1] + 0.5 S[i2] = (1, 0) + (0, 1) = (1, 1); residual 0 -> (2, 2).
    # u1, history i2 i1: long = ((2+0)/2, (2+1)/2) = (1, 1.5); short = (1, 0) + 0.5 (0, 2)
    # = (1, 1); residual (1, -1) -> (3, 1.5).
    vectors = model.user_vectors_now(torch.tensor([0, 1]))
    torch.testing.assert_close(vectors, torch.tensor([[2.0, 2.0], [3.0, 1.5]]))
    # scores = q_i . v + b_i with q = (1,0), (0,1), (1,1) and b = 0, 0.5, -1
    expected = torch.tensor([[2.0, 2.5, 3.0], [3.0, 2.0, 3.5]])
    torch.testing.assert_close(model.score_all(torch.tensor([0, 1])), expected)
    torch.testing.assert_close(
        model.score(torch.tensor([0, 1, 1]), torch.tensor([2, 0, 1])), torch.tensor([3.0, 3.0, 2.0])
    )


def test_the_next_item_loss_by_hand():
    model, _ = _model()

    # u0 at position 1 (context i0, target i2): long = L0 = (1, 0), short = S0 = (0, 1) -> (1, 1);
    # logits (1, 1.5, 1); u0 at position 2 (context i0 i2, target i1): long = (1.5, 1),
    # short = S2 + 0.5 S0 = (0, 2.5) -> (1.5, 3.5); logits (1.5, 4, 4).
    def ce(logits, target):
        return -logits[target] + math.log(sum(math.exp(x) for x in logits))

    expected_u0 = (ce([1, 1.5, 1], 2) + ce([1.5, 4, 4], 1)) / 2
    # u1 at position 1 (context i2, target i1): long = (2, 2), short = (0, 2), residual (1, -1)
    # -> (3, 3); logits (3, 3.5, 5)
    expected_u1 = ce([3, 3.5, 5], 1)
    loss = model.sequence_loss(torch.tensor([0, 1]), torch.tensor([[1, 2], [1, -1]]))
    torch.testing.assert_close(loss, torch.tensor([expected_u0, expected_u1]))


def test_bind_keeps_the_last_history_max_items():
    model, data = _model(history_max=2)
    assert model.sequences.tolist() == [[2, 1], [2, 1]]  # u0 keeps i2 i1 of i0 i2 i1
    assert model.lengths.tolist() == [2, 2]


def test_sequence_batches_sample_valid_targets_only():
    lengths = np.array([1, 2, 5, 0])
    batch = build_sequence_batch(lengths, np.arange(4), positions=50, rng=np.random.default_rng(0))
    assert batch.ends.shape == (4, 4)  # no more positions than the longest history has targets
    assert (batch.ends[0] == -1).all() and (batch.ends[3] == -1).all()
    assert set(batch.ends[1].tolist()) == {1}
    assert set(batch.ends[2].tolist()) <= {1, 2, 3, 4}
    assert batch.row_slot.tolist() == [0, 1, 2, 3]


def test_it_learns_what_follows_what():
    """Each user walks the catalog in steps of one from a random start: the next item is the
    one after their last. A static profile cannot know where a walk stopped; a history can."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(120):
        start, n = int(rng.integers(0, 20)), int(rng.integers(3, 8))
        rows += [(f"u{u}", f"i{(start + t) % 20}", t) for t in range(n)]
    data = build_user_item_data(
        make_events(rows), ItemCatalog.from_keys([f"i{j}" for j in range(20)])
    )
    model = build_model(
        ModelConfig(kind="history", embedding_dim=8),
        num_users=data.num_users,
        num_items=20,
        generator=torch.Generator().manual_seed(0),
    )
    model.bind(data)
    config = dataclasses.replace(TrainConfig(), learning_rate=0.05, local_epochs=40)
    train_local(model, data, config, rng=np.random.default_rng(1))
    with torch.no_grad():
        result = evaluate_model(model, data, k=1, rng=np.random.default_rng(2))
    assert result.means["hr@1"] > 0.9  # popularity would be near 1/20


@pytest.mark.parametrize("bad", [{"history_window": 0}, {"history_decay": 0.0}])
def test_bad_history_settings_are_refused(bad):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="history-"):
        ModelConfig(kind="history", **bad)
