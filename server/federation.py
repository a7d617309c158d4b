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

from common.config import FederationConfig, TrainConfig, train_config_to_record
from common.constants import (
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
)
from common.errors import FedrecError

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Message
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg

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

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "seconds": self.seconds,
            "train": self.train,
            "evaluate": self.evaluate,
            "failures": self.failures,
        }


@dataclass
class FederationResult:
    arrays: ArrayRecord
    rounds: list[RoundRecord]


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


def run_federation(
    grid: Grid,
    strategy: FedAvg,
    initial: ArrayRecord,
    *,
    federation: FederationConfig,
    train: TrainConfig,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> FederationResult:
    """Run ``federation.num_rounds`` rounds; evaluate every ``evaluate_every`` and at the end."""
    from flwr.app import ConfigRecord

    nodes = wait_for_nodes(
        grid, min_nodes=federation.min_nodes, timeout=federation.node_wait_timeout
    )
    logger.info("%d merchant(s) connected; starting %d rounds", len(nodes), federation.num_rounds)
    arrays, rounds = initial, []
    for server_round in range(1, federation.num_rounds + 1):
        started = time.perf_counter()
        record = RoundRecord(round=server_round)
        messages = strategy.configure_train(
            server_round, arrays, ConfigRecord(train_config_to_record(train)), grid
        )
        replies, failed = _split(grid.send_and_receive(messages, timeout=federation.round_timeout))
        record.failures += failed
        if not replies:
            raise FederationError(
                f"Round {server_round}: no merchant returned an update "
                f"({len(failed)} failed: {'; '.join(failed) or 'timed out'})."
            )
        aggregated, _ = strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = aggregated
        record.train = {_merchant_of(r): _metrics(r) for r in replies}

        last = server_round == federation.num_rounds
        every = federation.evaluate_every
        if last or (every and server_round % every == 0):
            eval_config = ConfigRecord({"top-k": federation.top_k})
            messages = strategy.configure_evaluate(server_round, arrays, eval_config, grid)
            replies, failed = _split(
                grid.send_and_receive(messages, timeout=federation.round_timeout)
            )
            record.failures += failed
            record.evaluate = {_merchant_of(r): _metrics(r) for r in replies}
        record.seconds = time.perf_counter() - started
        rounds.append(record)
        for failure in record.failures:
            logger.warning("round %d: %s", server_round, failure)
        if on_round is not None:
            on_round(record)
    return FederationResult(arrays=arrays, rounds=rounds)
