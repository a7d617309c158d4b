"""The item prior: one private item-count release per merchant, summed into public counts.

With privacy on, a run starts by asking every merchant for its noisy item
counts; their sum decides which items are trained (those whose noisy count
clears ``item-threshold`` noise standard deviations) and travels with every
later instruction.

With ``train-min-items``, a federation whose first release clears fewer items
than that trains nothing: a model over so few items cannot rank better than
their popularity. Every merchant then spends the rest of its epsilon on a
second count release (the top-up, :func:`common.privacy.accountant.top_up_noise`),
and the prior is each merchant's two releases averaged by inverse variance,
summed: as good as counts that took the whole epsilon from the start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.config import RoundPlan
from common.constants import (
    COUNTS_ARRAY,
    COUNTS_TOP_UP_FIELD,
    DP_COUNT_NOISE,
    DP_NOISE,
    DP_TOP_UP_NOISE,
    ITEM_COUNTS_KEY,
)
from common.models.prior import ItemPrior
from server.rounds import transport
from server.rounds.instructions import round_config
from server.rounds.records import FederationError, RunOptions
from server.rounds.replies import merchant_of, metrics, privacy_of, refusal, split

if TYPE_CHECKING:
    from flwr.serverapp import Grid

    from server.ledger import FederationLedger

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


@dataclass(frozen=True)
class PriorRelease:
    """The item prior, the merchants that refused, and why the federation trains nothing
    (``""`` when it trains)."""

    prior: ItemPrior
    refused: set[str]
    untrained: str = ""


@dataclass
class _Counts:
    """One round of count replies: each merchant's noisy counts and their noise std."""

    counts: dict[int, Any] = field(default_factory=dict)  # node -> (num_items,) float64
    noise: dict[int, float] = field(default_factory=dict)  # node -> std (sensitivity 1)
    trains: list[int] = field(default_factory=list)  # nodes whose plan trains (sigma > 0)
    refused: set[str] = field(default_factory=set)
    reasons: list[str] = field(default_factory=list)  # "merchant refused: why"
    failed: list[str] = field(default_factory=list)


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
) -> PriorRelease:
    """Ask every merchant for one private item-count release; build the public item prior.

    The trained items are those whose noisy count clears ``item-threshold``
    noise standard deviations; with ``top`` > 0 (a statistics model) at most
    ``top`` of them, the highest noisy counts (ties by item id), and at least
    one. Below ``train-min-items`` cleared items, the merchants top their
    counts up instead and the federation trains nothing (see the module).
    """
    import numpy as np

    options = options or RunOptions()
    first = _query(grid, nodes, plan, timeout, privacy_reports, ledger, options, names)
    if not first.counts:
        raise FederationError(
            "No merchant released item counts "
            f"({len(first.failed)} failed, {len(first.refused)} refused); the private run "
            "cannot start" + "".join(f"\n  {why}" for why in [*first.reasons, *first.failed])
        )
    from common.privacy.counts import most_counted, trained_items

    total, std = _sum(first)
    threshold = plan.privacy.item_threshold
    cleared = len(trained_items(total, noise_std=std, threshold=threshold))
    untrained = ""
    wanted = plan.privacy.train_min_items
    if wanted and cleared < wanted:
        untrained = (
            f"only {cleared} item(s) cleared {threshold:g} x the count noise std {std:.2f} "
            f"(train-min-items {wanted}): a model over so few items ranks no better than their "
            "popularity, so the federation trains nothing; "
            + (
                f"{len(first.trains)} merchant(s) were asked to spend the rest of their epsilon "
                "on a second count release (DP popularity at the whole epsilon)"
                if first.trains
                else "every merchant's counts already took its whole epsilon (count-only-below)"
            )
        )
        logger.info("item prior: %s", untrained)
        top_up = (
            _query(
                grid,
                first.trains,  # a counts-only merchant (count-only-below) has nothing left
                plan,
                timeout,
                privacy_reports,
                ledger,
                options,
                names,
                top_up=True,
            )
            if first.trains
            else _Counts()
        )
        total, std = _sum(_combined(first, top_up))
    trained = trained_items(total, noise_std=std, threshold=threshold)
    cleared = len(trained)
    if top > 0:  # a statistics model: the most counted of those, at most `top`, at least one
        trained = most_counted(total, min(top, max(1, len(trained))))
        logger.info(
            "item prior: the %d items of highest noisy count are trained (at most %d; %d clear "
            "%.1f x noise std %.2f)",
            len(trained),
            top,
            cleared,
            threshold,
            std,
        )
        return PriorRelease(ItemPrior(counts=total, trained=trained), first.refused, untrained)
    if len(trained) == 0:  # nothing clears the bar: train everything rather than nothing
        trained = np.arange(len(total), dtype=np.int64)
    logger.info(
        "item prior: %d of %d items trained (noisy count >= %.1f x noise std %.2f)",
        len(trained),
        len(total),
        threshold,
        std,
    )
    return PriorRelease(ItemPrior(counts=total, trained=trained), first.refused, untrained)


def _query(
    grid: Grid,
    nodes: list[int],
    plan: RoundPlan,
    timeout: float,
    privacy_reports: dict[str, dict[str, Any]],
    ledger: FederationLedger | None,
    options: RunOptions,
    names: dict[int, str] | None,
    *,
    top_up: bool = False,
) -> _Counts:
    """Send the count query (or the top-up query) to ``nodes``; gather what they release."""
    from flwr.app import ConfigRecord, Message, RecordDict

    extra = {COUNTS_TOP_UP_FIELD: True} if top_up else {}
    what = "item-count top-up" if top_up else "item counts"
    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord(round_config(plan, options, **extra))}),
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
    out = _Counts(failed=failed)
    for reply in replies:
        name = merchant_of(reply)
        if names is not None:
            names[reply.metadata.src_node_id] = name
        privacy_reports[name] = privacy_of(reply)
        reason = refusal(reply)
        if reason:
            logger.warning("%s: %s refused: %s", what, name, reason)
            out.refused.add(name)
            out.reasons.append(f"{name} refused: {reason}")
            continue
        node = reply.metadata.src_node_id
        counts = reply.content.array_records[ITEM_COUNTS_KEY][COUNTS_ARRAY].numpy()
        out.counts[node] = counts.astype("float64")
        out.noise[node] = float(metrics(reply)[DP_TOP_UP_NOISE if top_up else DP_COUNT_NOISE])
        if float(metrics(reply).get(DP_NOISE, 0.0)) > 0:
            out.trains.append(node)
    for failure in failed:
        logger.warning("%s: %s", what, failure)
    return out


def _sum(releases: _Counts) -> tuple[Any, float]:
    """The summed counts and their noise std (independent noise: variances add)."""
    import numpy as np

    total = np.sum([releases.counts[n] for n in sorted(releases.counts)], axis=0)
    return total, float(np.sqrt(sum(s**2 for s in releases.noise.values())))


def _combined(first: _Counts, top_up: _Counts) -> _Counts:
    """Each merchant's two releases averaged by inverse variance; a merchant that did not
    top up (out of budget, failed) keeps its first release."""
    from common.privacy.counts import combine_releases

    out = _Counts(refused=first.refused)
    for node, counts in first.counts.items():
        if node in top_up.counts:
            out.counts[node], out.noise[node] = combine_releases(
                counts, first.noise[node], top_up.counts[node], top_up.noise[node]
            )
        else:
            out.counts[node], out.noise[node] = counts, first.noise[node]
    return out
