"""What a merchant does on each instruction, as typed calls: train, release counts, evaluate.

No Flower here. Each handler takes a typed instruction from
:mod:`client.instructions`, calls the :class:`~client.merchant.Merchant`,
records in the ledger what leaves, and returns a :class:`Reply` that says
exactly what a merchant may release: shared parameters, plain metrics and
counts. :mod:`client.messages` turns it into a Flower Message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.instructions import CountsInstruction, EvaluateInstruction, TrainInstruction
from client.merchant import Merchant
from client.releases import PrivacyReport
from common.compression import compress
from common.config import RoundPlan
from common.constants import (
    ARRAYS_KEY,
    CATALOG_DIGEST_FIELD,
    CATALOG_KEY,
    CLIENT_SECONDS,
    CLIENT_STARTUP,
    COUNTS_ARRAY,
    DP_CLIPPED,
    DP_REFUSED,
    DP_TOP_UP_NOISE,
    EVAL_SECONDS,
    EVAL_USERS,
    ITEM_COUNTS_KEY,
    MERCHANT_CATALOG_FILE,
    MERCHANT_MODELS_DIR,
    TRAIN_LOSS,
    TRAIN_SECONDS,
    TRAIN_STEPS,
    TRAIN_USERS,
    WEIGHT_KEY,
)
from common.errors import ConfigError
from common.privacy.accountant import PrivacyBudgetExceeded, PrivacyRefused
from common.privacy.ledger import update_digest
from common.source_choice import SourceChoice

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """Everything a reply carries, before it becomes records."""

    metrics: dict[str, float]
    arrays: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # record key -> arrays
    privacy: PrivacyReport | None = None
    refusal: str = ""  # why the merchant refused (nothing was released)
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # record key -> fields
    encoding: str = ""  # how the update travels (compression), if encoded


def refuse(merchant: Merchant, plan: RoundPlan, refusal: PrivacyRefused) -> Reply:
    """The explicit refusal reply (its reason reaches the coordinator); nothing was released.

    Only a budget refusal carries the privacy report: after any other refusal
    (an account that disagrees with the ledger, a state used by another run)
    the account is not one to report from.
    """
    report = merchant.report(plan) if isinstance(refusal, PrivacyBudgetExceeded) else None
    return Reply({DP_REFUSED: 1}, privacy=report, refusal=str(refusal))


def train(merchant: Merchant, task: TrainInstruction, *, entered: float, age: float) -> Reply:
    """One round of local training; the update is recorded in the ledger before it leaves.

    ``entered`` is when the handler was entered (``time.perf_counter``) and
    ``age`` the process's age then: the reply reports both costs.
    """
    try:
        outcome = merchant.train(
            task.shared,
            task.plan,
            server_round=task.server_round,
            prior=task.prior,
            run=task.run,
            secagg=task.secagg,
        )
    except PrivacyRefused as refusal:
        # An explicit refusal, not an error: nothing was trained or released.
        return refuse(merchant, task.plan, refusal)
    metrics: dict[str, float] = {
        WEIGHT_KEY: outcome.num_examples,
        TRAIN_STEPS: outcome.stats.steps,
        TRAIN_SECONDS: outcome.stats.seconds,
        CLIENT_STARTUP: age,
        CLIENT_SECONDS: time.perf_counter() - entered,
    }
    if outcome.privacy is None:  # data-dependent figures are released only without DP
        metrics[TRAIN_LOSS] = outcome.stats.loss
        metrics[TRAIN_USERS] = outcome.stats.users
    else:
        metrics[DP_CLIPPED] = outcome.stats.clipped_fraction
    # Compression encodes the finished (clipped, noised) update: post-processing.
    compression = task.compression
    released: dict[str, Any] = (
        compress(outcome.shared, task.shared, compression)
        if compression.enabled
        else dict(outcome.shared)
    )
    if outcome.reservation is not None:  # handed to Flower for sending: commit
        merchant.commit(outcome.reservation, released, metrics=metrics)
    else:
        shared_names, local_names = merchant.parameter_names()
        merchant.ledger.non_dp_release(
            run=task.run,
            server_round=task.server_round,
            what="model-update",
            metrics=metrics,
            update_sha256=update_digest(released),
            released=shared_names,
            kept_local=local_names,
        )
    return Reply(
        metrics,
        {ARRAYS_KEY: released},
        privacy=outcome.privacy,
        encoding=compression.kind if compression.enabled else "",
    )


def release_counts(merchant: Merchant, task: CountsInstruction) -> Reply:
    """A private item-count release (once per training), or the count top-up, recorded
    before it leaves; the top-up's sigma travels beside it (the coordinator weighs by it)."""
    try:
        if task.top_up:
            release = merchant.release_counts_top_up(task.plan, run=task.run)
        else:
            release = merchant.release_item_counts(task.plan, run=task.run)
    except PrivacyRefused as refusal:
        return refuse(merchant, task.plan, refusal)
    merchant.commit(release.reservation, {COUNTS_ARRAY: release.counts}, metrics={})
    sigma = {DP_TOP_UP_NOISE: release.noise_multiplier} if task.top_up else {}
    return Reply(sigma, {ITEM_COUNTS_KEY: {COUNTS_ARRAY: release.counts}}, privacy=release.privacy)


def evaluate(
    merchant: Merchant,
    task: EvaluateInstruction,
    *,
    started: float,
    state: Path | None,
    settings: dict[str, Any],
) -> Reply:
    """Evaluate the global model; a deployed merchant (``state``) keeps it for serving.

    ``started`` is when the handler was entered (``time.perf_counter``);
    ``settings`` is the run config, stored beside a published model.
    """
    result = merchant.evaluate(
        task.shared,
        k=task.k,
        server_round=task.server_round,
        prior=task.prior,
        refit=task.refit,
        privacy=task.privacy,
    )
    # What this merchant serves with this model (kept here, never in the reply).
    choice = merchant.choose_source(
        task.shared,
        k=task.k,
        prior=task.prior,
        privacy=task.privacy,
        run=task.run,
        server_round=task.server_round,
        trained=not task.untrained,
    )
    if choice is not None:
        logger.info("merchant %s %s", merchant.name, choice.reason())
    if state is not None:  # a deployed merchant keeps the model it evaluated, for `fedrec serve`
        publish_for_serving(state, task, settings=settings, choice=choice)
    metrics: dict[str, float] = dict(result.means)
    metrics[WEIGHT_KEY] = result.num_users
    metrics[EVAL_USERS] = result.num_users
    metrics[EVAL_SECONDS] = time.perf_counter() - started
    merchant.ledger.non_dp_release(
        run=task.run,
        server_round=task.server_round,
        what="evaluation-metrics",
        metrics=metrics,
    )
    return Reply(metrics)


def publish_for_serving(
    state: Path,
    task: EvaluateInstruction,
    *,
    settings: dict[str, Any],
    choice: SourceChoice | None = None,
) -> None:
    """Publish the received global model to ``STATE/models`` (atomically; serve hot-reloads it)."""
    import torch

    from client.serving.model_dir import publish
    from common.data.catalog import ItemCatalog

    catalog_path = state / MERCHANT_CATALOG_FILE
    if not catalog_path.is_file():
        logger.warning(
            "no %s in %s; the global model is not kept for serving", MERCHANT_CATALOG_FILE, state
        )
        return
    publish(
        state / MERCHANT_MODELS_DIR,
        settings=settings,
        shared={name: torch.from_numpy(array) for name, array in task.shared.items()},
        catalog=ItemCatalog.load(catalog_path),
        prior=task.prior,
        label=f"{task.run or 'run'}-round-{task.server_round:04d}",
        choice=choice,
    )


def encode_catalog(state: Path, keys: tuple[str, ...], *, sent_digest: object) -> Reply:
    """Deployment set-up: encode the enrolled log through the federation catalog ``keys``.

    ``sent_digest`` is the catalog's SHA-256 as the coordinator sent it; a
    catalog that does not match it arrived damaged and is refused.
    """
    from client.deploy.enrolment import encode_for_catalog
    from common.data.catalog import ItemCatalog, catalog_digest

    digest = catalog_digest(keys)
    if digest != sent_digest:
        raise ConfigError("The federation catalog arrived damaged (its SHA-256 differs).")
    encode_for_catalog(state, ItemCatalog(keys=keys), digest=digest)
    return Reply({}, extra={CATALOG_KEY: {CATALOG_DIGEST_FIELD: digest}})
