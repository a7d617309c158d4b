"""The item prior: one private item-count release per merchant, summed into public counts.

With privacy on, a run starts by asking every merchant for its noisy item
counts; their sum decides which items are trained (those whose noisy count
clears ``item-threshold`` noise standard deviations) and travels with every
later instruction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from common.config import RoundPlan
from common.constants import COUNTS_ARRAY, DP_COUNT_NOISE, ITEM_COUNTS_KEY
from common.models.prior import ItemPrior
from server.rounds import transport
from server.rounds.instructions import round_config
from server.rounds.records import FederationError, RunOptions
from server.rounds.replies import merchant_of, metrics, privacy_of, refusal, split

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from server.ledger import FederationLedger

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


def collect_item_prior(
    grid: Grid,
    nodes: list[int],
    *,
    plan: RoundPlan,
    timeout: float,
    privacy_reports: dict[str, dict[str, Any]],
    ledger: FederationLedger | None = None,
    options: RunOptions | None = None,
    names: dict[int, str] | None = None,
    top: int = 0,
) -> tuple[ItemPrior, set[str]]:
    """Ask every merchant for one private item-count release; build the public item prior.

    The trained items are those whose noisy count clears ``item-threshold``
    noise standard deviations; with ``top`` > 0 (a statistics model) at most
    ``top`` of them, the highest noisy counts (ties by item id), and at least
    one. Returns the prior and the merchants that refused (out of budget already).
    """
    import numpy as np
    from flwr.app import ConfigRecord, Message, RecordDict

    options = options or RunOptions()
    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord(round_config(plan, options))}),
            dst_node_id=node,
            message_type="query",
        )
        for node in nodes
    ]
    if ledger is not None:
        messages = ledger.instruct(messages)
    replies, failed = split(
        transport.send_and_receive(grid, messages, timeout=timeout, poll=options.poll)
    )
    if ledger is not None:
        ledger.record(replies, server_round=0, phase="query")
    total, variance, refused = None, 0.0, set()
    reasons: list[str] = []  # "merchant: why", for the failure message
    for reply in replies:
        name = merchant_of(reply)
        if names is not None:
            names[reply.metadata.src_node_id] = name
        privacy_reports[name] = privacy_of(reply)
        reason = refusal(reply)
        if reason:
            logger.warning("item counts: %s refused: %s", name, reason)
            refused.add(name)
            reasons.append(f"{name} refused: {reason}")
            continue
        counts = reply.content.array_records[ITEM_COUNTS_KEY][COUNTS_ARRAY].numpy()
        total = counts.astype(np.float64) if total is None else total + counts
        variance += metrics(reply)[DP_COUNT_NOISE] ** 2
    for failure in failed:
        logger.warning("item counts: %s", failure)
    if total is None:
        raise FederationError(
            "No merchant released item counts "
            f"({len(failed)} failed, {len(refused)} refused); the private run cannot start"
            + "".join(f"\n  {why}" for why in [*reasons, *failed])
        )
    from common.privacy.counts import most_counted, trained_items

    trained = trained_items(
        total, noise_std=float(np.sqrt(variance)), threshold=plan.privacy.item_threshold
    )
    if top > 0:  # a statistics model: the most counted of those, at most `top`, at least one
        trained = most_counted(total, min(top, max(1, len(trained))))
        logger.info(
            "item prior: the %d items of highest noisy count are trained (at most %d; %d clear "
            "%.1f x noise std %.2f)",
            len(trained),
            top,
            int(np.count_nonzero(total >= plan.privacy.item_threshold * np.sqrt(variance))),
            plan.privacy.item_threshold,
            float(np.sqrt(variance)),
        )
        return ItemPrior(counts=total, trained=trained), refused
    if len(trained) == 0:  # nothing clears the bar: train everything rather than nothing
        trained = np.arange(len(total), dtype=np.int64)
    logger.info(
        "item prior: %d of %d items trained (noisy count >= %.1f x noise std %.2f)",
        len(trained),
        len(total),
        plan.privacy.item_threshold,
        float(np.sqrt(variance)),
    )
    return ItemPrior(counts=total, trained=trained), refused
