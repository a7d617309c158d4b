"""Local training: one loop, parameterised by a sampler and a step.

:func:`run_steps` takes the units (users, or interactions) of each step from
a *sampler* (:mod:`client.training.sampling`), has the model build their examples
(:meth:`~common.models.base.Recommender.make_batch`) and hands the batch to a
*step*, which updates the model and reports its loss. Every way fedrec
trains is that loop with its own pair:

* :func:`train_local` (a round without DP; the centralised baseline calls it
  too): shuffled batches, or ``local-steps`` fresh batches, and
  :class:`NonPrivateStep` (Adam on every parameter, optional FedProx term);
* :func:`fit_local` (users only, no privacy cost): shuffled batches and
  :class:`NonPrivateStep` on the local parameters, the shared ones frozen;
* :func:`client.training.private.train_private` (DP-SGD): Poisson sampling
  and :class:`client.training.private.PrivateStep` (per-user clipping, noise).

One step = one batch of users; each user's loss is the mean over their own
examples (:meth:`~common.models.base.Recommender.user_losses`), so the batch
loss is a sum of per-user terms: what a per-user clipping step needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from client.training.sampling import (
    sample_bucketed_step_batches,
    sample_step_batches,
    sample_user_batches,
)
from common.config import TrainConfig
from common.data.dataset import UserItemData
from common.models.base import Recommender
from common.models.batches import Batch

__all__ = [
    "LoopTally",
    "NonPrivateStep",
    "OptimizerCarry",
    "Step",
    "StepOutcome",
    "TrainConfig",
    "TrainStats",
    "active_users",
    "fit_local",
    "per_user_loss",
    "run_steps",
    "sample_step_batches",
    "sample_user_batches",
    "train_local",
]


@dataclass(frozen=True)
class TrainStats:
    loss: float
    steps: int
    users: int
    examples: int
    seconds: float
    clipped_fraction: float = 0.0  # DP only: share of sampled examples whose norm exceeded C


@dataclass
class OptimizerCarry:
    """Adam's state carried from one round to the next (``keep-optimizer-state``).

    :func:`train_local` starts from ``state`` (when it fits the model) and leaves
    its final state here. The state is a function of this party's own updates; it
    stays with the party and is never released.
    """

    state: dict[str, object] | None = None


@dataclass(frozen=True)
class StepOutcome:
    """What one step reports to the loop."""

    loss: float | None  # the batch loss; None: the batch had no example (a noise-only DP step)
    clipped: int = 0  # DP only: examples whose gradient norm exceeded the clipping bound


class Step(Protocol):
    """Updates the model from one batch."""

    def __call__(self, batch: Batch) -> StepOutcome: ...


@dataclass(frozen=True)
class LoopTally:
    """What :func:`run_steps` counted over its steps."""

    steps: int
    losses: tuple[float, ...]  # of the steps that had examples
    examples: int  # rows (or target positions) over all batches
    sampled: int  # units (users, or interactions) over all batches
    clipped: int  # DP only: examples whose gradient norm exceeded the clipping bound

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")


def run_steps(
    model: Recommender,
    batches: Iterable[npt.NDArray[np.int64]],
    *,
    build: Callable[[npt.NDArray[np.int64]], Batch],
    step: Step,
) -> LoopTally:
    """One ``step`` per batch of units from the sampler ``batches``, its examples from ``build``.

    Samplers and builders draw from their generators lazily, batch by batch, so
    the order of every random draw is fixed by the seeds alone.
    """
    model.train()
    losses: list[float] = []
    steps = examples = sampled = clipped = 0
    for units in batches:
        batch = build(units)
        outcome = step(batch)
        if outcome.loss is not None:
            losses.append(outcome.loss)
        clipped += outcome.clipped
        examples += int(batch.row_items.numel())
        sampled += batch.size
        steps += 1
    return LoopTally(
        steps=steps, losses=tuple(losses), examples=examples, sampled=sampled, clipped=clipped
    )


def per_user_loss(model: Recommender, batch: Batch, config: TrainConfig) -> torch.Tensor:
    """Loss of each user in the batch, shape (B,): the model's own
    (:meth:`~common.models.base.Recommender.user_losses`), weight decay included."""
    return model.user_losses(batch, config)


def active_users(data: UserItemData) -> npt.NDArray[np.int64]:
    """The users with training data (the units of user-level sampling)."""
    return np.flatnonzero(np.diff(data.train_indptr) > 0).astype(np.int64)


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

    def __call__(self, batch: Batch) -> StepOutcome:
        loss = self.model.user_losses(batch, self.config).mean()
        if self.config.proximal_mu > 0 and self.reference is not None:
            shared = self.model.shared_parameters()
            drift = sum((shared[n] - ref).pow(2).sum() for n, ref in self.reference.items())
            loss = loss + 0.5 * self.config.proximal_mu * drift
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return StepOutcome(loss=float(loss.detach()))


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
    active = active_users(data)
    reference = {n: p.detach().clone() for n, p in model.shared_parameters().items()}
    step = NonPrivateStep(
        model, config, reference=reference, state=None if carry is None else carry.state
    )
    sizes = model.example_sizes()
    if steps > 0 and config.length_buckets > 0 and sizes is not None:
        batches = sample_bucketed_step_batches(
            active,
            sizes,
            batch_users=config.batch_users,
            steps=steps,
            buckets=config.length_buckets,
            rng=rng,
        )
    elif steps > 0:
        batches = sample_step_batches(active, batch_users=config.batch_users, steps=steps, rng=rng)
    else:
        batches = sample_user_batches(
            active, batch_users=config.batch_users, epochs=config.local_epochs, rng=rng
        )
    tally = run_steps(
        model,
        batches,
        build=lambda users: model.make_batch(data, users, config, rng=rng),
        step=step,
    )
    if carry is not None:
        carry.state = step.optimizer.state_dict()
    return TrainStats(
        loss=tally.mean_loss,
        steps=tally.steps,
        users=len(active),
        examples=tally.examples,
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
    if epochs < 1 or not model.local_parameters():  # nothing user-owned to fit (e.g. SASRec)
        return 0
    active = active_users(data)
    shared = list(model.shared_parameters().values())
    flags = [p.requires_grad for p in shared]
    for p in shared:
        p.requires_grad_(False)
    try:
        step = NonPrivateStep(model, config, parameters=list(model.local_parameters().values()))
        tally = run_steps(
            model,
            sample_user_batches(active, batch_users=config.batch_users, epochs=epochs, rng=rng),
            build=lambda users: model.make_batch(data, users, config, rng=rng),
            step=step,
        )
    finally:
        for p, flag in zip(shared, flags, strict=True):
            p.requires_grad_(flag)
    return tally.steps
