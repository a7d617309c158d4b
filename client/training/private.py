"""Local DP-SGD for one round: Poisson-sampled examples, per-example clipping, Opacus noise.

Each step:

1. Opacus's Poisson sampler picks every example (a user, or an interaction
   for record-level DP) independently with probability q. An empty sample is
   still a step: it adds noise only and is counted like any other.
2. :class:`~client.training.clipping.PerUserClipper` computes, in one backward pass,
   the sum over sampled examples of their shared-parameter gradients, each
   clipped to L2 norm C. The cost scales with the rows the batch touches.
3. :class:`~client.training.dp_optimizer.ClippedSumDPOptimizer` (Opacus) adds
   N(0, (sigma C)^2) noise, divides by the expected batch q n and steps Adam on
   the shared parameters.
4. The sampled users' own (local) parameters take a plain Adam step on their
   own loss. They are never released; each depends only on that user's data
   and on shared parameters that are themselves outputs of counted, noised
   steps (joint differential privacy).

It is the one training loop (:func:`client.training.loop.run_steps`) with Poisson
sampling (:func:`client.training.sampling.poisson_batches`) and :class:`PrivateStep`.
The caller records ``plan.steps_per_round`` steps with the accountant before
this runs; this function takes exactly that many steps.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import numpy.typing as npt
import torch

from client.training.clipping import PerUserClipper
from client.training.examples import build_interaction_batch
from client.training.loop import StepOutcome, TrainStats, active_users, run_steps
from client.training.sampling import poisson_batches
from common.config import TrainConfig
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.models.base import LOCAL_VECTOR, Recommender
from common.models.batches import Batch
from common.privacy.accountant import PrivacyPlan


def private_population(data: UserItemData, unit: str) -> npt.NDArray[np.int64]:
    """The examples DP-SGD samples from: users with training data, or training interactions."""
    if unit == "interaction":
        return np.arange(data.num_train, dtype=np.int64)
    return active_users(data)


def _item_rows(
    model: Recommender, items: npt.NDArray[np.int64]
) -> dict[torch.Tensor, torch.Tensor]:
    """Shared item-indexed tables (with or without a padding row past the catalog) -> the
    rows (trained items) that may move; every other row keeps its released value."""
    rows = torch.as_tensor(items, dtype=torch.int64)
    shared = {id(p) for p in model.shared_parameters().values()}
    return {
        module.weight: rows
        for module in model.modules()
        if isinstance(module, torch.nn.Embedding)
        and id(module.weight) in shared
        and module.num_embeddings in (model.num_items, model.num_items + 1)
    }


class PrivateStep:
    """One DP-SGD step on a batch: clip per example, noise (Opacus), Adam; users step locally."""

    def __init__(
        self,
        model: Recommender,
        config: TrainConfig,
        plan: PrivacyPlan,
        *,
        generator: torch.Generator,
        item_pool: npt.NDArray[np.int64] | None = None,
    ) -> None:
        if (problem := model.clipping_problem()) is not None:
            raise ConfigError(f"Private training needs exact per-user clipping: {problem}")
        from client.training.dp_optimizer import ClippedSumDPOptimizer  # imports Opacus

        self.model = model
        self.config = config
        self.max_norm = plan.max_grad_norm
        self.optimizer = ClippedSumDPOptimizer(
            # fused: no full-size temporaries (a 1M-item table would need several).
            torch.optim.Adam(
                list(model.shared_parameters().values()), lr=config.learning_rate, fused=True
            ),
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=plan.expected_batch,
            generator=generator,
            noised_rows=_item_rows(model, item_pool) if item_pool is not None else None,
        )
        local = list(model.local_parameters().values())
        self.local_optimizer = torch.optim.Adam(local, lr=config.learning_rate) if local else None
        self.clipper = PerUserClipper(model, max_norm=plan.max_grad_norm)

    def __call__(self, batch: Batch) -> StepOutcome:
        """Take the step; no loss when the sample was empty (a noise-only step, still counted)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.local_optimizer is not None:
            self.local_optimizer.zero_grad(set_to_none=True)
        result = None
        if batch.row_items.numel() > 0:
            result = self.clipper.backward(
                functools.partial(self.model.user_losses, batch, self.config),
                row_slot=batch.row_slot,
                num_users=batch.size,
            )
        self.optimizer.step()
        if self.local_optimizer is not None and result is not None:
            self.local_optimizer.step()
        if result is None:
            return StepOutcome(loss=None)
        return StepOutcome(
            loss=float(result.per_user_loss.mean()),
            clipped=int((result.norms > self.max_norm).sum()),
        )


def train_private(
    model: Recommender,
    data: UserItemData,
    config: TrainConfig,
    plan: PrivacyPlan,
    *,
    rng: np.random.Generator,
    generator: torch.Generator,
    item_pool: npt.NDArray[np.int64] | None = None,
) -> TrainStats:
    """``plan.steps_per_round`` DP-SGD steps on ``model``'s shared parameters."""
    started = time.perf_counter()
    population = private_population(data, plan.unit)
    step = PrivateStep(model, config, plan, generator=generator, item_pool=item_pool)
    batches = poisson_batches(
        population, sample_rate=plan.sample_rate, steps=plan.steps_per_round, generator=generator
    )
    tally = run_steps(
        model,
        batches,
        build=functools.partial(_batch, model, data, config, plan, rng, item_pool),
        step=step,
    )
    return TrainStats(
        loss=tally.mean_loss,
        steps=tally.steps,
        users=tally.sampled,
        examples=tally.examples,
        seconds=time.perf_counter() - started,
        clipped_fraction=tally.clipped / tally.sampled if tally.sampled else 0.0,
    )


def _batch(
    model: Recommender,
    data: UserItemData,
    config: TrainConfig,
    plan: PrivacyPlan,
    rng: np.random.Generator,
    item_pool: npt.NDArray[np.int64] | None,
    chosen: npt.NDArray[np.int64],
) -> Batch:
    """The examples of the sampled units: the model's own for users, one per interaction else."""
    if plan.unit == "interaction":
        if model.USER_REPRESENTATION != LOCAL_VECTOR:
            raise ConfigError(
                f"privacy-unit=interaction is not supported with {type(model).__name__} (user "
                f"representation {model.USER_REPRESENTATION!r}, as model=history): its examples "
                "are users' sequences. Use privacy-unit=user, or model=mf."
            )
        return build_interaction_batch(
            data,
            chosen,
            num_negatives=config.num_negatives,
            explicit=config.loss == "mse",
            rng=rng,
            item_pool=item_pool,
        )
    return model.make_batch(data, chosen, config, rng=rng, item_pool=item_pool)
