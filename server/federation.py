"""The coordinator's round loop over Flower's Grid and strategy hooks.

Flower's ``Strategy.start`` runs a fixed loop; fedrec drives the same strategy
hooks (``configure_train`` / ``aggregate_train`` / ``configure_evaluate``)
itself so it can wait for merchants before round 1, keep per-merchant results,
bound every round by a timeout and evaluate only when asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.config import FederationConfig, RoundPlan, round_plan_to_record
from common.constants import (
    DP_ACCOUNTANT_FIELD,
    DP_COUNT_NOISE,
    DP_REASON_FIELD,
    DP_REFUSED,
    DP_UNIT_FIELD,
    ITEM_COUNTS_KEY,
    ITEM_PRIOR_KEY,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
)
from common.errors import FedrecError
from common.models.prior import ItemPrior

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Message
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg

    from server.client_privacy import ClientDP
    from server.ledger import FederationLedger

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


class FederationError(FedrecError):
    """The federation cannot go on (no merchants, every merchant failed, ...)."""

    exit_code = 5


@dataclass
class RoundRecord:
    """What happened in one round, per merchant."""

    round: int
    seconds: float = 0.0
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluate: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # merchant -> reason (budget)
    aggregated: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "seconds": self.seconds,
            "train": self.train,
            "evaluate": self.evaluate,
            "failures": self.failures,
            "refused": self.refused,
            "aggregated": self.aggregated,
        }


@dataclass
class FederationResult:
    arrays: ArrayRecord
    rounds: list[RoundRecord]
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest report per merchant
    prior: ItemPrior | None = None
    stopped_early: str = ""  # why the run ended before num_rounds, if it did
    client_privacy: dict[str, Any] = field(default_factory=dict)  # cross-device: coordinator's


def wait_for_nodes(grid: Grid, *, min_nodes: int, timeout: float, poll: float = 0.5) -> list[int]:
    """Block until ``min_nodes`` nodes are connected, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_nodes:
            return nodes
        if time.monotonic() >= deadline:
            raise FederationError(
                f"Only {len(nodes)} merchant(s) connected after {timeout:.0f} s; the federation "
                f"needs at least {min_nodes}. Start more merchants or lower min-nodes."
            )
        time.sleep(poll)


def _merchant_of(message: Message) -> str:
    content = message.content
    if MERCHANT_KEY in content.config_records:
        return str(content.config_records[MERCHANT_KEY][MERCHANT_NAME_FIELD])
    return f"node-{message.metadata.src_node_id}"


def _split(replies: Iterable[Message]) -> tuple[list[Message], list[str]]:
    """Separate error replies; order the rest by merchant so aggregation is reproducible."""
    ok, failed = [], []
    for reply in replies:
        if reply.has_error():
            failed.append(f"node-{reply.metadata.src_node_id}: {reply.error.reason}")
        else:
            ok.append(reply)
    ok.sort(key=_merchant_of)  # float sums depend on order; arrival order does not repeat
    return ok, failed


def _metrics(message: Message) -> dict[str, float]:
    record = message.content.metric_records[METRICS_KEY]
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


def _privacy_of(message: Message) -> dict[str, Any]:
    """The privacy report a merchant attached (numbers plus unit and accountant), if any."""
    fields = message.content.config_records.get(MERCHANT_KEY)
    if fields is None or DP_UNIT_FIELD not in fields:
        return {}
    report: dict[str, Any] = {k: v for k, v in _metrics(message).items() if k.startswith("dp-")}
    report[DP_UNIT_FIELD] = str(fields[DP_UNIT_FIELD])
    report[DP_ACCOUNTANT_FIELD] = str(fields[DP_ACCOUNTANT_FIELD])
    return report


def _refusal(message: Message) -> str:
    """The merchant's refusal reason, or "" if the reply is an update."""
    if _metrics(message).get(DP_REFUSED, 0.0) < 1:
        return ""
    fields = message.content.config_records.get(MERCHANT_KEY)
    return str(fields.get(DP_REASON_FIELD, "refused")) if fields is not None else "refused"


def _with_prior(messages: Iterable[Message], prior: ItemPrior | None) -> list[Message]:
    out = list(messages)
    if prior is None:
        return out
    from flwr.app import Array, ArrayRecord

    record = ArrayRecord(
        {"counts": Array(prior.counts.astype("float64")), "trained": Array(prior.trained)}
    )
    for message in out:
        message.content[ITEM_PRIOR_KEY] = record
    return out


def collect_item_prior(
    grid: Grid,
    nodes: list[int],
    *,
    plan: RoundPlan,
    timeout: float,
    privacy_reports: dict[str, dict[str, Any]],
    ledger: FederationLedger | None = None,
) -> tuple[ItemPrior, set[int]]:
    """Ask every merchant for one private item-count release; build the public item prior.

    Returns the prior and the nodes that refused (out of budget already).
    """
    import numpy as np
    from flwr.app import ConfigRecord, Message, RecordDict

    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord(round_plan_to_record(plan))}),
            dst_node_id=node,
            message_type="query",
        )
        for node in nodes
    ]
    if ledger is not None:
        messages = ledger.instruct(messages)
    replies, failed = _split(grid.send_and_receive(messages, timeout=timeout))
    if ledger is not None:
        ledger.record(replies, server_round=0, phase="query")
    total, variance, refused = None, 0.0, set()
    for reply in replies:
        name = _merchant_of(reply)
        privacy_reports[name] = _privacy_of(reply)
        reason = _refusal(reply)
        if reason:
            logger.warning("item counts: %s refused: %s", name, reason)
            refused.add(reply.metadata.src_node_id)
            continue
        counts = reply.content.array_records[ITEM_COUNTS_KEY]["counts"].numpy()
        total = counts.astype(np.float64) if total is None else total + counts
        variance += _metrics(reply)[DP_COUNT_NOISE] ** 2
    for failure in failed:
        logger.warning("item counts: %s", failure)
    if total is None:
        raise FederationError(
            "No merchant released item counts "
            f"({len(failed)} failed, {len(refused)} refused); the private run cannot start."
        )
    from common.privacy.counts import trained_items

    trained = trained_items(
        total, noise_std=float(np.sqrt(variance)), threshold=plan.privacy.item_threshold
    )
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


def run_federation(
    grid: Grid,
    strategy: FedAvg,
    initial: ArrayRecord,
    *,
    federation: FederationConfig,
    plan: RoundPlan,
    on_round: Callable[[RoundRecord], None] | None = None,
    client_dp: ClientDP | None = None,
    ledger: FederationLedger | None = None,
) -> FederationResult:
    """Run up to ``federation.num_rounds`` rounds; evaluate every ``evaluate_every`` and at the end.

    With privacy on, merchants first release private item counts (the item
    prior), and a merchant that refuses a round (budget) is left out from then
    on; when fewer than ``min_train_nodes`` merchants train in a round, that
    round is not aggregated and the run ends cleanly with an evaluation.
    """
    from flwr.app import ConfigRecord
    from flwr.serverapp.exception import PrivacyBudgetExhausted

    nodes = wait_for_nodes(
        grid, min_nodes=federation.min_nodes, timeout=federation.node_wait_timeout
    )
    logger.info("%d merchant(s) connected; starting %d rounds", len(nodes), federation.num_rounds)
    result = FederationResult(arrays=initial, rounds=[])
    exhausted: set[int] = set()
    if plan.privacy.merchant_dp and plan.privacy.count_share > 0:
        result.prior, exhausted = collect_item_prior(
            grid,
            nodes,
            plan=plan,
            timeout=federation.round_timeout,
            privacy_reports=result.privacy,
            ledger=ledger,
        )
    instruct = ledger.instruct if ledger is not None else (lambda messages: messages)
    train_config = ConfigRecord(round_plan_to_record(plan))
    for server_round in range(1, federation.num_rounds + 1):
        started = time.perf_counter()
        record = RoundRecord(round=server_round)
        try:
            configured = strategy.configure_train(server_round, result.arrays, train_config, grid)
        except PrivacyBudgetExhausted as exhausted_budget:  # client-level DP at the coordinator
            result.stopped_early = f"round {server_round}: {exhausted_budget}"
            logger.warning("stopping: %s", result.stopped_early)
            break
        messages = [m for m in configured if m.metadata.dst_node_id not in exhausted]
        replies, failed = _split(
            grid.send_and_receive(
                instruct(_with_prior(messages, result.prior)), timeout=federation.round_timeout
            )
        )
        if ledger is not None:
            ledger.record(replies, server_round=server_round, phase="train")
        record.failures += failed
        updates = []
        for reply in replies:
            name = _merchant_of(reply)
            if privacy := _privacy_of(reply):
                result.privacy[name] = privacy
            reason = _refusal(reply)
            if reason:
                record.refused[name] = reason
                exhausted.add(reply.metadata.src_node_id)
                logger.warning("round %d: %s refused: %s", server_round, name, reason)
            else:
                updates.append(reply)
        record.train = {_merchant_of(r): _metrics(r) for r in updates}
        if not updates and not record.refused:
            raise FederationError(
                f"Round {server_round}: no merchant returned an update "
                f"({len(failed)} failed: {'; '.join(failed) or 'timed out'})."
            )
        if len(updates) < federation.min_train_nodes:
            record.aggregated = False
            result.stopped_early = (
                f"round {server_round}: {len(updates)} merchant(s) trained, fewer than "
                f"min-train-nodes={federation.min_train_nodes} "
                f"({len(record.refused)} refused for budget); the round was not aggregated"
            )
            logger.warning("stopping: %s", result.stopped_early)
        else:
            aggregated, _ = strategy.aggregate_train(server_round, updates)
            if aggregated is not None:
                result.arrays = aggregated
            else:
                record.aggregated = False
            if client_dp is not None:
                result.client_privacy = client_dp.spent()

        last = server_round == federation.num_rounds or bool(result.stopped_early)
        every = federation.evaluate_every
        if last or (every and server_round % every == 0):
            eval_config = ConfigRecord({"top-k": federation.top_k, **round_plan_to_record(plan)})
            to_evaluate = strategy.configure_evaluate(
                server_round, result.arrays, eval_config, grid
            )
            replies, failed = _split(
                grid.send_and_receive(
                    instruct(_with_prior(list(to_evaluate), result.prior)),
                    timeout=federation.round_timeout,
                )
            )
            if ledger is not None:
                ledger.record(replies, server_round=server_round, phase="evaluate")
            record.failures += failed
            record.evaluate = {_merchant_of(r): _metrics(r) for r in replies}
        if ledger is not None:
            ledger.countersign(server_round)
        record.seconds = time.perf_counter() - started
        result.rounds.append(record)
        for failure in record.failures:
            logger.warning("round %d: %s", server_round, failure)
        if on_round is not None:
            on_round(record)
        if result.stopped_early:
            break
    if ledger is not None:
        ledger.close(rounds=len(result.rounds), stopped_early=result.stopped_early)
    return result
