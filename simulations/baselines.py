"""Baselines on the same split: popularity, the same model trained centrally, EASE^R.

They are always reported beside the federated result so its numbers read as
ratios. The centralised model pools every merchant's training data (users
stay distinct) and trains for as many passes as the federation did, without
DP and with the non-private defaults. The ratios divide by EASE^R
(:mod:`simulations.reference`), a tuned strong model, when the catalog allows it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import torch

from client.training.loop import OptimizerCarry, train_local
from common.config import RunConfig, parse_run_config, to_run_config
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.evaluation import EvaluationResult, evaluate_model, evaluate_scores
from common.models.base import build_model
from common.privacy.config import PRIVATE_DEFAULTS, PrivacyConfig
from common.seeding import numpy_rng, torch_generator
from simulations.reference import EASE_METHOD, EaseResult, check_ease_size, evaluate_ease


def popularity_scores(data: UserItemData) -> npt.NDArray[np.float64]:
    """Training interaction count of every item, shape (num_items,)."""
    return np.bincount(data.train_items, minlength=data.num_items).astype(np.float64)


def evaluate_popularity(pooled: UserItemData, *, k: int, seed: int) -> EvaluationResult:
    counts = popularity_scores(pooled)
    return evaluate_scores(
        lambda users: np.broadcast_to(counts, (len(users), len(counts))),
        pooled,
        k=k,
        rng=numpy_rng(seed, "evaluate", "popularity"),
    )


def non_private_run(run: RunConfig) -> RunConfig:
    """``run`` with privacy off, and DP-SGD's tuned defaults back at the non-private ones.

    ``--epsilon`` puts :data:`PRIVATE_DEFAULTS` beneath the explicit settings
    (user and interaction units); a setting still equal to its DP-tuned value
    is taken as one of those and reset. An explicit setting that happens to
    equal it is reset too: the reference is what fedrec trains without DP.
    """
    if not run.privacy.enabled:
        return run
    undone: dict[str, object] = {}
    if run.privacy.merchant_dp:
        current, plain = to_run_config(run), to_run_config(RunConfig())
        undone = {k: plain[k] for k, v in PRIVATE_DEFAULTS.items() if current[k] == v}
    return parse_run_config(undone, base=dataclasses.replace(run, privacy=PrivacyConfig()))


def train_centralised(
    pooled: UserItemData, config: RunConfig, *, parties: int = 1
) -> EvaluationResult:
    """Train the federation's model on pooled data, round by round as the federation does:
    each round as many steps as the ``parties`` took together (local-steps each), or
    local-epochs passes over everyone; the learning rate on the same schedule; one Adam
    throughout (a single party never restarts it).

    Callers pass :func:`non_private_run` of a DP run: this trains without DP.
    """
    model = build_model(
        config.model,
        num_users=pooled.num_users,
        num_items=pooled.num_items,
        generator=torch_generator(config.federation.seed, "centralised-init"),
    )
    model.bind(pooled)
    rng = numpy_rng(config.federation.seed, "train", "centralised")
    carry = OptimizerCarry()
    rounds = config.federation.num_rounds
    for server_round in range(1, rounds + 1):
        train_local(
            model,
            pooled,
            config.train.at_round(server_round, rounds),
            rng=rng,
            steps=config.privacy.local_steps * parties,
            carry=carry,
        )
    with torch.no_grad():
        return evaluate_model(
            model,
            pooled,
            k=config.federation.top_k,
            rng=numpy_rng(config.federation.seed, "evaluate", "centralised"),
        )


def evaluate_dp_popularity(
    merchants: list[UserItemData],
    pooled: UserItemData,
    *,
    run: RunConfig,
    names: list[str],
    draw: int = 0,
) -> EvaluationResult:
    """Popularity from private counts, spending each merchant's whole epsilon on one release.

    Same unit, delta and accountant as the DP model: each merchant releases
    its item counts once with the Gaussian mechanism calibrated to
    ``(target-epsilon, target-delta)``; the coordinator sums them and ranks by
    the sum. This is what the DP model has to beat to be worth its budget.
    ``draw`` > 0 draws other noise (a benchmark's repeated draws); 0 is the run's own.
    """
    from common.privacy.accounting import gaussian_noise_multiplier
    from common.privacy.counts import noisy_item_counts

    privacy = run.privacy
    sigma = gaussian_noise_multiplier(
        epsilon=privacy.target_epsilon, delta=privacy.delta, accountant=privacy.accountant
    )
    counts = np.zeros(pooled.num_items)
    for name, data in zip(names, merchants, strict=True):
        counts += noisy_item_counts(
            data,
            unit=privacy.unit,
            cap=run.train.max_interactions_per_user,
            noise_multiplier=sigma,
            rng=numpy_rng(run.federation.seed, "dp-popularity", name, *([draw] if draw else [])),
        )
    return evaluate_scores(
        lambda users: np.broadcast_to(counts, (len(users), len(counts))),
        pooled,
        k=run.federation.top_k,
        rng=numpy_rng(run.federation.seed, "evaluate", "dp-popularity"),
    )


def strong_reference(pooled: UserItemData, *, k: int, seed: int) -> EaseResult | str:
    """EASE^R tuned on a validation split of the training data, or why it was skipped."""
    try:
        check_ease_size(pooled.num_items)
    except ConfigError as refused:
        return f"{EASE_METHOD} skipped: {refused}"
    return evaluate_ease(pooled, k=k, seed=seed)
