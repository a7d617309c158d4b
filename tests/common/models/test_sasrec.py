"""SASRec: causal attention, every parameter shared, learns a sequence (full or sampled
softmax); private runs need the sampled softmax."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from client.training.loop import train_local
from client.training.private import PrivateStep
from common.config import RunConfig, TrainConfig, parse_run_config
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.errors import ConfigError
from common.evaluation import evaluate_model
from common.models import ModelConfig, build_model
from common.models.registry import MODELS
from common.models.sasrec import SASRec
from common.privacy.accountant import PrivacyPlan
from simulations.merchants import check_privacy_feasible
from tests.conftest import make_events

ITEMS = 8
CATALOG = ItemCatalog.from_keys([f"i{j}" for j in range(ITEMS)])


def _cycle_data(users: int = 24, length: int = 12):
    """User u walks the catalog in a cycle from item u mod 8: the next item is always +1."""
    rows = [(f"u{u}", f"i{(u + t) % ITEMS}", t) for u in range(users) for t in range(length)]
    return build_user_item_data(make_events(rows), CATALOG, hold_out=True)


def _sasrec(data, **config) -> SASRec:
    settings = {"kind": "sasrec", "embedding_dim": 16, "sasrec_heads": 2, "dropout": 0.0}
    model = build_model(
        ModelConfig(**(settings | config)),
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(0),
    )
    assert isinstance(model, SASRec)
    model.bind(data)
    return model


def test_sasrec_is_registered_parsed_from_the_run_config_and_has_only_shared_parameters():
    assert "sasrec" in MODELS
    assert parse_run_config({"model": "sasrec"}).model.kind == "sasrec"
    model = _sasrec(_cycle_data())
    assert model.local_parameters() == {}
    assert "item_embedding.weight" in model.shared_parameters()
    assert model.USER_REPRESENTATION == "recent-items"


def test_a_hidden_state_reads_only_the_items_at_or_before_its_position():
    model = _sasrec(_cycle_data()).eval()
    sequences = torch.tensor([[0, 1, 2, 3, 4, 5]])
    changed = sequences.clone()
    changed[0, 4] = 7  # a later item changes
    with torch.no_grad():
        before, after = model.encode(sequences), model.encode(changed)
    torch.testing.assert_close(before[0, :4], after[0, :4])  # positions 0..3 never saw it
    assert (before[0, 4:] - after[0, 4:]).abs().max() > 1e-4  # 4 and 5 did


def test_scores_come_from_the_users_last_item_and_losses_are_per_user():
    data = _cycle_data()
    model = _sasrec(data).eval()
    users = torch.tensor([0, 3, 5])
    scores = model.score_all(users)
    assert scores.shape == (3, ITEMS)
    torch.testing.assert_close(
        model.score(users, torch.tensor([1, 2, 3])), scores[[0, 1, 2], [1, 2, 3]]
    )
    batch = model.make_batch(data, np.array([0, 3, 5]), TrainConfig(), rng=np.random.default_rng(0))
    losses = model.user_losses(batch, TrainConfig())
    assert losses.shape == (3,) and torch.isfinite(losses).all()


@pytest.mark.parametrize("negatives", [0, 3])
def test_sasrec_learns_that_the_next_item_follows_the_last_one(negatives):
    data = _cycle_data()
    model = _sasrec(data, sasrec_negatives=negatives)
    config = dataclasses.replace(TrainConfig(), local_epochs=60, batch_users=8, learning_rate=0.01)
    train_local(model, data, config, rng=np.random.default_rng(0))
    result = evaluate_model(model, data, k=1, rng=np.random.default_rng(0))
    # Each user's held-out item is the one after their last training item: top-1 should find it.
    assert result.means["hr@1"] > 0.9, result.means


def test_batches_hold_every_prefix_and_negatives_drawn_for_the_sampled_softmax():
    data = _cycle_data(users=3, length=5)  # 4 training items each
    model = _sasrec(data, sasrec_negatives=6)
    batch = model.make_batch(data, np.array([2, 0]), TrainConfig(), rng=np.random.default_rng(0))
    assert batch.ends.tolist() == [[1, 2, 3], [1, 2, 3]]  # every target after the first item
    assert batch.negatives is not None and batch.negatives.shape == (2, 6)
    pool = np.array([5, 6])
    pooled = model.make_batch(
        data, np.array([1]), TrainConfig(), rng=np.random.default_rng(0), item_pool=pool
    )
    assert set(pooled.negatives.flatten().tolist()) <= {5, 6}
    assert (
        _sasrec(data)
        .make_batch(data, np.array([0]), TrainConfig(), rng=np.random.default_rng(0))
        .negatives
        is None
    )


def test_private_training_refuses_full_softmax_sasrec_before_anything_is_released():
    data = _cycle_data()
    model = _sasrec(data)
    plan = PrivacyPlan(
        unit="user",
        accountant="rdp",
        delta=1e-5,
        target_epsilon=3.0,
        max_grad_norm=1.0,
        population=data.num_users,
        sample_rate=0.5,
        steps_per_round=1,
        planned_rounds=1,
        noise_multiplier=1.0,
        count_noise_multiplier=0.0,
    )
    with pytest.raises(ConfigError, match="per-user clipping: model=sasrec with sasrec-neg"):
        PrivateStep(model, TrainConfig(), plan, generator=torch.Generator())
    run = parse_run_config({"model": "sasrec", "privacy-unit": "user", "target-epsilon": 3.0})
    with pytest.raises(ConfigError, match="privacy-unit=user needs exact per-user clipping"):
        check_privacy_feasible(run, {"m": data})
    sampled = parse_run_config(
        {
            "model": "sasrec",
            "sasrec-negatives": 4,
            "privacy-unit": "user",
            "target-epsilon": 3.0,
            "target-delta": 1e-3,
        }
    )
    check_privacy_feasible(sampled, {"m": data})  # accepted
    PrivateStep(_sasrec(data, sasrec_negatives=4), TrainConfig(), plan, generator=torch.Generator())
    assert isinstance(run, RunConfig)


def _typed_walks(*, users: int = 160, length: int = 7, items: int = 40, typed: bool = True):
    """After viewing item i a user goes to i+1; after buying it, to i+2 (the type is a coin
    flip): only a model that reads event types can tell which comes next."""
    rng = np.random.default_rng(0)
    rows, kinds = [], []
    for u in range(users):
        item = int(rng.integers(items))
        for t in range(length):
            kind = "purchase" if rng.random() < 0.5 else "view"
            rows.append((f"u{u}", f"i{item % items}", t))
            kinds.append(kind)
            item += 2 if kind == "purchase" else 1
    catalog = ItemCatalog.from_keys([f"i{j}" for j in range(items)])
    events = make_events(rows, event_types=kinds if typed else None)
    return build_user_item_data(events, catalog, hold_out=True)


@pytest.mark.parametrize("typed", [True, False])
def test_event_types_are_an_input_the_model_learns_from(typed):
    data = _typed_walks(typed=typed)
    assert (data.train_events is not None) == typed
    model = _sasrec(data, sasrec_negatives=0, sasrec_blocks=1)
    config = dataclasses.replace(TrainConfig(), local_epochs=15, batch_users=16, learning_rate=0.02)
    train_local(model, data, config, rng=np.random.default_rng(0))
    hit = evaluate_model(model.eval(), data, k=1, rng=np.random.default_rng(0)).means["hr@1"]
    if typed:
        assert hit > 0.9, hit  # the last item's type says +1 or +2
    else:
        assert hit < 0.75, hit  # a coin flip the model cannot see


def test_a_users_loss_is_the_same_alone_or_beside_a_longer_history():
    """Only the batch's needed columns are encoded; causal attention makes that exact."""
    rows = [("short", f"i{t}", t) for t in range(3)] + [("long", f"i{t}", t) for t in range(ITEMS)]
    data = build_user_item_data(make_events(rows), CATALOG, hold_out=True)
    model = _sasrec(data, sasrec_negatives=0).eval()
    lengths = model.example_sizes()
    assert sorted(lengths.tolist()) == [2, 7]  # training items: one held out each
    both = np.argsort(lengths)  # short, then long
    batch = model.make_batch(data, both, TrainConfig(), rng=np.random.default_rng(0))
    together = model.user_losses(batch, TrainConfig())
    for row, user in enumerate(both):
        alone = model.make_batch(
            data, np.array([user]), TrainConfig(), rng=np.random.default_rng(0)
        )
        assert alone.ends.shape[1] < batch.ends.shape[1] or lengths[user] == 7
        torch.testing.assert_close(model.user_losses(alone, TrainConfig())[0], together[row])
