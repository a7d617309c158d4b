"""Local training over batches of users: the loop DP-SGD slots into.

One step = one batch of users; each user's loss is the mean over their own
rows, so the batch loss is a sum of per-user terms (what a per-user clipping
step needs). Shared and local parameters are updated together here; a private
variant replaces :func:`sample_user_batches` with Poisson sampling and
:class:`NonPrivateStep` with a clip-and-noise step on the shared parameters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from client.examples import SequenceBatch, UserBatch, build_sequence_batch, build_user_batch
from common.config import TrainConfig
from common.data.dataset import UserItemData
from common.models.base import Recommender
from common.models.history import HistoryModel


@dataclass(frozen=True)
class TrainStats:
    loss: float
    steps: int
    users: int
    examples: int
    seconds: float
    clipped_fraction: float = 0.0  # DP only: share of sampled examples whose norm exceeded C


Batch = UserBatch | SequenceBatch


@dataclass
class OptimizerCarry:
    """Adam's state carried from one round to the next (``keep-optimizer-state``).

    :func:`train_local` starts from ``state`` (when it fits the model) and leaves
    its final state here. The state is a function of this party's own updates; it
    stays with the party and is never released.
    """

    state: dict[str, object] | None = None


def make_batch(
    model: Recommender,
    data: UserItemData,
    users: npt.NDArray[np.int64],
    config: TrainConfig,
    *,
    rng: np.random.Generator,
    item_pool: npt.NDArray[np.int64] | None = None,
) -> Batch:
    """The examples of ``users`` in the form ``model`` trains on."""
    if isinstance(model, HistoryModel):
        return build_sequence_batch(
            model.lengths.numpy(), users, positions=config.positions_per_user, rng=rng
        )
    return build_user_batch(
        data,
        users,
        max_interactions_per_user=config.max_interactions_per_user,
        num_negatives=config.num_negatives,
        explicit=config.loss == "mse",
        rng=rng,
        item_pool=item_pool,
    )


def per_user_loss(model: Recommender, batch: Batch, config: TrainConfig) -> torch.Tensor:
    """Loss of each user in the batch, shape (B,): mean over their rows plus L2 on touched rows."""
    if isinstance(batch, SequenceBatch):
        assert isinstance(model, HistoryModel)
        per_user = model.sequence_loss(batch.users, batch.ends)  # next-item softmax, (B,)
        if config.weight_decay > 0:
            per_user = per_user + config.weight_decay * model.user_embedding(batch.users).pow(
                2
            ).sum(-1)
        return per_user
    users = batch.users[batch.row_slot]  # (n_rows,)
    logits = model.score(users, batch.row_items)  # (n_rows,)
    if config.loss == "bce":
        row_loss = F.binary_cross_entropy_with_logits(logits, batch.labels, reduction="none")
    else:
        row_loss = (logits - batch.labels) ** 2
    if config.weight_decay > 0:
        item_sq = sum(table(batch.row_items).pow(2).sum(-1) for table in model.item_vectors())
        row_loss = row_loss + config.weight_decay * item_sq
    per_user = torch.zeros(batch.size).index_add_(0, batch.row_slot, row_loss * batch.row_weight)
    if config.weight_decay > 0:
        user_sq = sum(table(batch.users).pow(2).sum(-1) for table in model.user_vectors())
        per_user = per_user + config.weight_decay * user_sq
    return per_user  # (B,)


def sample_user_batches(
    users: npt.NDArray[np.int64], *, batch_users: int, epochs: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.int64]]:
    """Shuffled, fixed-size batches of users, ``epochs`` passes (the non-private sampler)."""
    for _ in range(epochs):
        order = rng.permutation(users)
        for start in range(0, len(order), batch_users):
            yield order[start : start + batch_users]


class NonPrivateStep:
    """Plain Adam on ``parameters`` (default: all), with an optional FedProx proximal term."""

    def __init__(
        self,
        model: Recommender,
        config: TrainConfig,
        *,
        reference: dict[str, torch.Tensor] | None = None,
        parameters: list[torch.Tensor] | None = None,
        state: dict[str, object] | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.reference = reference
        params: list[torch.Tensor] = list(model.parameters()) if parameters is None else parameters
        self.optimizer = torch.optim.Adam(params, lr=config.learning_rate)
        if state is not None and _fits(state, params):
            self.optimizer.load_state_dict(state)
            for group in self.optimizer.param_groups:
                group["lr"] = config.learning_rate  # this round's rate, not the stored one

    def __call__(self, batch: Batch) -> float:
        loss = per_user_loss(self.model, batch, self.config).mean()
        if self.config.proximal_mu > 0 and self.reference is not None:
            shared = self.model.shared_parameters()
            drift = sum((shared[n] - ref).pow(2).sum() for n, ref in self.reference.items())
            loss = loss + 0.5 * self.config.proximal_mu * drift
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _fits(state: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Whether a stored Adam state belongs to these parameters (same count and shapes)."""
    per_param = state.get("state")
    groups = state.get("param_groups")
    if not isinstance(per_param, dict) or not isinstance(groups, list) or len(groups) != 1:
        return False
    if len(groups[0].get("params", ())) != len(params):
        return False
    for index, moments in per_param.items():
        if not 0 <= int(index) < len(params):
            return False
        for name in ("exp_avg", "exp_avg_sq"):
            moment = moments.get(name)
            if not isinstance(moment, torch.Tensor) or moment.shape != params[int(index)].shape:
                return False
    return True


def sample_step_batches(
    users: npt.NDArray[np.int64], *, batch_users: int, steps: int, rng: np.random.Generator
) -> Iterator[npt.NDArray[np.int64]]:
    """``steps`` batches, each of distinct users drawn afresh: a fixed amount of local work
    per round whatever the merchant's size."""
    size = min(batch_users, len(users))
    for _ in range(steps if size else 0):
        yield rng.choice(users, size=size, replace=False)


def train_local(
    model: Recommender,
    data: UserItemData,
    config: TrainConfig,
    *,
    rng: np.random.Generator,
    steps: int = 0,
    carry: OptimizerCarry | None = None,
) -> TrainStats:
    """Train ``model`` on ``data``: ``steps`` batches when > 0 (``local-steps``), else
    ``config.local_epochs`` passes over its users. With ``carry``, Adam resumes from the
    state it holds (when that fits this model) and leaves its new state there."""
    started = time.perf_counter()
    active = np.flatnonzero(np.diff(data.train_indptr) > 0).astype(np.int64)
    reference = {n: p.detach().clone() for n, p in model.shared_parameters().items()}
    step = NonPrivateStep(
        model, config, reference=reference, state=None if carry is None else carry.state
    )
    model.train()
    losses, examples, taken = [], 0, 0
    batches = (
        sample_step_batches(active, batch_users=config.batch_users, steps=steps, rng=rng)
        if steps > 0
        else sample_user_batches(
            active, batch_users=config.batch_users, epochs=config.local_epochs, rng=rng
        )
    )
    for users in batches:
        batch = make_batch(model, data, users, config, rng=rng)
        losses.append(step(batch))
        examples += int(batch.row_items.numel())
        taken += 1
    if carry is not None:
        carry.state = step.optimizer.state_dict()
    return TrainStats(
        loss=float(np.mean(losses)) if losses else float("nan"),
        steps=taken,
        users=len(active),
        examples=examples,
        seconds=time.perf_counter() - started,
    )


def fit_local(
    model: Recommender,
    data: UserItemData,
    config: TrainConfig,
    *,
    epochs: int,
    rng: np.random.Generator,
) -> int:
    """``epochs`` passes that update only the local (user) parameters; returns steps taken.

    The shared parameters are frozen, so this touches nothing that is released
    and costs no privacy: each user's vector becomes a function of their own
    data and the (already private) shared parameters, as in alternating least
    squares. Under DP it fits users to the incoming global items before the
    private steps, so those steps carry signal.
    """
    if epochs < 1:
        return 0
    active = np.flatnonzero(np.diff(data.train_indptr) > 0).astype(np.int64)
    shared = list(model.shared_parameters().values())
    flags = [p.requires_grad for p in shared]
    for p in shared:
        p.requires_grad_(False)
    steps = 0
    try:
        step = NonPrivateStep(model, config, parameters=list(model.local_parameters().values()))
        model.train()
        for users in sample_user_batches(
            active, batch_users=config.batch_users, epochs=epochs, rng=rng
        ):
            step(make_batch(model, data, users, config, rng=rng))
            steps += 1
    finally:
        for p, flag in zip(shared, flags, strict=True):
            p.requires_grad_(flag)
    return steps
