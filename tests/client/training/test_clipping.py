"""PerUserClipper against a slow, obviously-correct oracle: one backward per user."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from client.training import captures
from client.training.clipping import CLIP_EPSILON, PerUserClipper
from client.training.loop import per_user_loss
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.models import ModelConfig, build_model
from common.models.batches import UserBatch, build_sequence_batch, build_user_batch
from common.models.mf import MatrixFactorization
from tests.conftest import make_events

NUM_ITEMS = 7
ITEMS_PER_USER = (5, 1, 3, 2)  # training items per user: different row counts
NUM_USERS = len(ITEMS_PER_USER)


def _model(kind, *, num_users=NUM_USERS, num_items=NUM_ITEMS, seed=0):
    return build_model(
        ModelConfig(kind=kind, embedding_dim=4, mlp_layers=(6, 3)),
        num_users=num_users,
        num_items=num_items,
        generator=torch.Generator().manual_seed(seed),
    )


def _randomise_biases(model, seed=1):
    """build_model zeroes biases; non-zero ones make every gradient term show up."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bias" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def _batch(*, seed=0, negatives=3):
    # user u has items u, u+1, ... (+1 for the held-out test item)
    rows = [
        (f"u{u}", f"i{(u + j) % NUM_ITEMS}", j)
        for u, n in enumerate(ITEMS_PER_USER)
        for j in range(n + 1)
    ]
    data = build_user_item_data(
        make_events(rows), ItemCatalog.from_keys([f"i{j}" for j in range(NUM_ITEMS)])
    )
    return build_user_batch(
        data,
        np.arange(data.num_users, dtype=np.int64),
        max_interactions_per_user=10,
        num_negatives=negatives,
        explicit=False,
        rng=np.random.default_rng(seed),
    )


def _oracle(model, loss_fn, num_users, max_norm):
    """Per user: plain autograd on that user's loss alone, joint norm, clip; then sum."""
    shared = model.shared_parameters()
    clipped = {n: torch.zeros_like(p) for n, p in shared.items()}
    norms = []
    for u in range(num_users):
        model.zero_grad(set_to_none=True)
        loss_fn()[u].backward()
        grads = {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in shared.items()}
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
        factor = min(1.0, max_norm / (float(norm) + CLIP_EPSILON))
        for n, g in grads.items():
            clipped[n] += factor * g
        norms.append(norm)
    model.zero_grad(set_to_none=True)
    loss_fn().sum().backward()
    ordinary = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return clipped, torch.stack(norms), ordinary


def _check_against_oracle(model, batch, config, max_norm):
    def loss_fn():
        return per_user_loss(model, batch, config)

    clipped, norms, ordinary = _oracle(model, loss_fn, batch.size, max_norm)
    result = PerUserClipper(model, max_norm=max_norm).backward(
        loss_fn, row_slot=batch.row_slot, num_users=batch.size
    )
    close = {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(result.norms, norms, **close)
    torch.testing.assert_close(result.per_user_loss, loss_fn().detach())
    for name, param in model.shared_parameters().items():
        torch.testing.assert_close(param.grad, clipped[name], **close, msg=name)
    for name, param in model.local_parameters().items():
        torch.testing.assert_close(param.grad, ordinary[name], **close, msg=name)
    return result, norms, ordinary


@pytest.mark.parametrize("kind", ["mf", "neumf"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("max_norm", [1e-3, "median", 1e6])
def test_matches_per_user_oracle(kind, weight_decay, max_norm):
    model = _model(kind)
    _randomise_biases(model)
    batch = _batch()
    config = TrainConfig(weight_decay=weight_decay)
    pairs = list(zip(batch.row_slot.tolist(), batch.row_items.tolist(), strict=True))
    assert len(set(pairs)) < len(pairs)  # some negatives hit a positive of the same user
    if max_norm == "median":  # some users clipped, some not
        loss_fn = lambda: per_user_loss(model, batch, config)  # noqa: E731
        _, norms, _ = _oracle(model, loss_fn, batch.size, 1e6)
        max_norm = float(norms.median())

    result, norms, ordinary = _check_against_oracle(model, batch, config, max_norm)

    if max_norm >= 1e6:  # nobody clipped: the ordinary gradient of the summed loss
        for name, param in model.shared_parameters().items():
            torch.testing.assert_close(param.grad, ordinary[name], atol=1e-5, rtol=1e-4)
    else:  # every user's contribution has norm <= max_norm, so the sum is bounded too
        total = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.shared_parameters().values()))
        assert float(total) <= batch.size * max_norm + 1e-6


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["mf", "neumf"]),
    rows_per_user=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
    weight_decay=st.sampled_from([0.0, 0.1]),
    loss=st.sampled_from(["bce", "mse"]),
    max_norm=st.floats(1e-3, 3.0),
)
def test_random_batches_match_oracle(kind, rows_per_user, seed, weight_decay, loss, max_norm):
    rng = np.random.default_rng(seed)
    num_users = len(rows_per_user)
    slot = np.repeat(np.arange(num_users), rows_per_user)
    rng.shuffle(slot)  # rows of one user need not be contiguous
    counts = np.bincount(slot, minlength=num_users)
    batch = UserBatch(
        users=torch.as_tensor(rng.permutation(num_users + 2)[:num_users]),
        row_slot=torch.as_tensor(slot, dtype=torch.int64),
        row_items=torch.as_tensor(rng.integers(0, 4, len(slot)), dtype=torch.int64),
        labels=torch.as_tensor(rng.integers(0, 2, len(slot)), dtype=torch.float32),
        row_weight=torch.as_tensor(1.0 / np.maximum(counts, 1)[slot], dtype=torch.float32),
    )
    model = _model(kind, num_users=num_users + 2, num_items=4, seed=seed)
    _randomise_biases(model, seed=seed)
    config = TrainConfig(weight_decay=weight_decay, loss=loss)
    _check_against_oracle(model, batch, config, max_norm)


@pytest.mark.parametrize("budget", [1, 600])
def test_linear_norms_in_small_padded_blocks_match_oracle(monkeypatch, budget):
    monkeypatch.setattr(captures, "LINEAR_CHUNK_FLOATS", budget)  # 1: one user per block
    model = _model("neumf")
    _randomise_biases(model)
    _check_against_oracle(model, _batch(seed=3), TrainConfig(), max_norm=0.05)


def test_hooks_are_removed_and_weights_train_normally_afterwards():
    model = _model("neumf")
    batch = _batch()
    config = TrainConfig()
    PerUserClipper(model, max_norm=1.0).backward(
        lambda: per_user_loss(model, batch, config), row_slot=batch.row_slot, num_users=batch.size
    )
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    model.zero_grad(set_to_none=True)
    per_user_loss(model, batch, config).sum().backward()  # plain autograd again: dense grads
    assert model.gmf_item.weight.grad is not None
    assert model.gmf_item.weight.grad.shape == (NUM_ITEMS, 4)
    assert model.score(torch.tensor([0]), torch.tensor([1])).requires_grad


def test_hooks_are_removed_when_loss_fn_fails():
    model = _model("mf")

    def broken():
        model.score(torch.tensor([0, 1]), torch.tensor([2, 3]))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        PerUserClipper(model, max_norm=1.0).backward(
            broken, row_slot=torch.tensor([0, 1]), num_users=2
        )
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_shared_parameter_is_left_alone():
    model = _model("mf")
    model.item_bias.weight.requires_grad_(False)
    batch = _batch()
    PerUserClipper(model, max_norm=1.0).backward(
        lambda: per_user_loss(model, batch, TrainConfig()),
        row_slot=batch.row_slot,
        num_users=batch.size,
    )
    assert model.item_bias.weight.grad is None and not model.item_bias.weight.requires_grad
    assert model.item_embedding.weight.grad is not None


def test_grads_accumulate_like_autograd():
    model = _model("mf")
    batch = _batch()
    clipper = PerUserClipper(model, max_norm=0.01)

    def step():
        return clipper.backward(
            lambda: per_user_loss(model, batch, TrainConfig()),
            row_slot=batch.row_slot,
            num_users=batch.size,
        )

    step()
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, 2 * once[name], msg=name)


def test_shared_parameters_the_loss_never_reaches_get_a_zero_gradient():
    model = _model("neumf")
    items, slot = torch.tensor([1, 2, 2]), torch.tensor([0, 0, 1])

    def loss_fn():  # only the GMF item table
        rows = model.gmf_item(items).sum(-1)  # (3,)
        return torch.zeros(2).index_add(0, slot, rows)

    PerUserClipper(model, max_norm=1e6).backward(loss_fn, row_slot=slot, num_users=2)
    expected = torch.zeros(NUM_ITEMS, 4)
    expected[1], expected[2] = 1.0, 2.0
    torch.testing.assert_close(model.gmf_item.weight.grad, expected)
    for name, param in model.shared_parameters().items():
        if name != "gmf_item.weight":
            torch.testing.assert_close(param.grad, torch.zeros_like(param), msg=name)


def test_call_not_aligned_with_row_slot_is_refused():
    model = _model("mf")
    with pytest.raises(ValueError, match=r"called on 3 rows but the batch has 2 rows"):
        PerUserClipper(model, max_norm=1.0).backward(
            lambda: model.score(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2]))[:2],
            row_slot=torch.tensor([0, 1]),
            num_users=2,
        )
    assert all(not m._forward_hooks for m in model.modules())


def test_loss_of_wrong_shape_is_refused():
    model = _model("mf")
    with pytest.raises(ValueError, match=r"one loss per user, shape \(3,\), got \(2,\)"):
        PerUserClipper(model, max_norm=1.0).backward(
            lambda: model.score(torch.tensor([0, 1]), torch.tensor([0, 1])),
            row_slot=torch.tensor([0, 2]),
            num_users=3,
        )


class _ScaledMF(MatrixFactorization):
    """MF with a free temperature parameter and a BatchNorm: neither can be clipped per user."""

    def __init__(self) -> None:
        super().__init__(ModelConfig(embedding_dim=4), num_users=2, num_items=3)
        self.temperature = nn.Parameter(torch.ones(1))
        self.norm = nn.BatchNorm1d(4)

    def score(self, users, items):
        return super().score(users, items) * self.temperature


def test_unsupported_shared_modules_are_all_named():
    with pytest.raises(ValueError) as raised:
        PerUserClipper(_ScaledMF(), max_norm=1.0)
    message = str(raised.value)
    assert "['temperature'] (owned by _ScaledMF)" in message
    assert "['norm.weight', 'norm.bias'] (owned by BatchNorm1d)" in message
    assert "Embedding, Linear, LayerNorm, Offset" in message


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("inf"), float("nan")])
def test_clipping_norm_must_be_positive_and_finite(max_norm):
    with pytest.raises(ValueError, match="clipping norm should be a positive finite value"):
        PerUserClipper(_model("mf"), max_norm=max_norm)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("max_norm", [1e-3, "median", 1e6])
def test_history_model_next_item_softmax_matches_per_user_oracle(weight_decay, max_norm):
    """The full-catalog next-item loss: each user's loss is still one term of the batch loss."""
    rows = [
        (f"u{u}", f"i{(u + 2 * j) % NUM_ITEMS}", j)
        for u, n in enumerate(ITEMS_PER_USER)
        for j in range(n + 1)
    ]
    data = build_user_item_data(
        make_events(rows), ItemCatalog.from_keys([f"i{j}" for j in range(NUM_ITEMS)])
    )
    model = build_model(
        ModelConfig(kind="history", embedding_dim=4, history_window=3),
        num_users=data.num_users,
        num_items=NUM_ITEMS,
        generator=torch.Generator().manual_seed(0),
    )
    model.bind(data)
    _randomise_biases(model)
    with torch.no_grad():  # non-zero user residuals: their (local) gradient shows up too
        model.user_embedding.weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(2))
    batch = build_sequence_batch(
        model.lengths.numpy(), np.arange(data.num_users), positions=3, rng=np.random.default_rng(0)
    )
    assert bool((batch.ends == -1).any()) and bool((batch.ends > 0).any())  # a 1-item user
    config = TrainConfig(weight_decay=weight_decay)
    if max_norm == "median":
        loss_fn = lambda: per_user_loss(model, batch, config)  # noqa: E731
        _, norms, _ = _oracle(model, loss_fn, batch.size, 1e6)
        max_norm = float(norms[norms > 0].median())
    _check_against_oracle(model, batch, config, max_norm)
