"""One train round: send the global model over a transport, judge the replies, aggregate.

Two transports carry a round: plain Flower messages (each update decoded and
judged by :func:`server.rounds.replies.judge` before the strategy aggregates)
or SecAgg+ (the coordinator sees only the masked sum, checked as a whole).
Every aggregate is checked again before it becomes the global model, so nothing
non-finite is ever checkpointed or sent to merchants; when nothing is accepted
the global model stays as it was (and FedAdam's / FedAvgM's state with it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.constants import SECAGG_FIELD, SERVER_ROUND_FIELD
from server.rounds import transport
from server.rounds.checkpoint import STRATEGY_STATE
from server.rounds.instructions import round_config, with_prior
from server.rounds.records import FederationError, RoundRecord
from server.rounds.replies import judge, merchant_of, metrics, privacy_of, refusal, silent, split
from server.rounds.update_bounds import check_global, check_secure_aggregate
from server.rounds.updates import decode_update

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Message
    from flwr.serverapp.strategy import FedAvg

    from server.ledger import FederationLedger
    from server.rounds.loop import RoundLoop

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


@dataclass
class Exchange:
    """What came back from a train round's transport."""

    replies: list[Message]
    failed: list[str]
    secure_arrays: ArrayRecord | None = None  # SecAgg+: the unmasked aggregate, if any
    halted: str = ""  # SecAgg+: why it stopped without an aggregate


def reject(
    record: RoundRecord,
    ledger: FederationLedger | None,
    reason: str,
    *,
    merchant: str = "",
    node: int = -1,
) -> None:
    """A merchant's update (or, without a merchant, the round's aggregate) is left out."""
    record.failures.append(f"{merchant or 'aggregate'}: update rejected: {reason}")
    if ledger is not None:
        ledger.reject(server_round=record.round, reason=reason, merchant=merchant, node=node)


def strategy_moments(strategy: FedAvg) -> dict[str, Any]:
    """The strategy's own state that aggregation changes, to put back when it is rejected:
    FedAdam's moments; FedAvgM's velocity and the model it measures the next update from."""
    names = (*STRATEGY_STATE, "current_arrays")
    return {name: getattr(strategy, name) for name in names if hasattr(strategy, name)}


def exchange(loop: RoundLoop, record: RoundRecord, messages: list[Message]) -> Exchange:
    """Send the round's instructions over SecAgg+ or plain messages; collect the replies."""
    result, options = loop.result, loop.options
    timeout = loop.federation.round_timeout
    if loop.secure:
        assert options.secagg is not None and options.context is not None
        from flwr.app import ConfigRecord

        from server.rounds.secagg import secure_train_round

        config = round_config(
            loop.plan, options, **{SERVER_ROUND_FIELD: record.round, SECAGG_FIELD: True}
        )
        outcome = secure_train_round(
            loop.grid,
            options.context,
            nodes=[m.metadata.dst_node_id for m in messages],
            server_round=record.round,
            arrays=result.arrays,
            config=ConfigRecord(config),
            settings=options.secagg,
            timeout=timeout,
            decorate=lambda ms: loop.instruct(with_prior(ms, result.prior)),
        )
        replies, failed = split(outcome.replies)
        return Exchange(replies, failed + outcome.failures, outcome.arrays, outcome.halted)
    sent = loop.instruct(with_prior(messages, result.prior))
    received = transport.send_and_receive(loop.grid, sent, timeout=timeout, poll=options.poll)
    replies, failed = split(received)
    failed += silent(messages, received, loop.names)
    record.count_bytes("train", sent, replies)
    return Exchange(replies, failed)


def accept(
    loop: RoundLoop, record: RoundRecord, replies: list[Message], reference: dict[str, Any]
) -> tuple[list[Message], int]:
    """The updates that may be aggregated, and how many were rejected; refusals are noted."""
    updates, rejected = [], 0  # rejected: merchants that trained but were left out
    for reply in replies:
        name = merchant_of(reply)
        loop.names[reply.metadata.src_node_id] = name
        if privacy := privacy_of(reply):
            loop.result.privacy[name] = privacy
        if reason := refusal(reply):
            record.refused[name] = reason
            loop.exhausted.add(name)
            logger.warning("round %d: %s refused: %s", record.round, name, reason)
            continue
        released = metrics(reply)
        if not loop.secure:  # after the ledger checked what was received, as it was received
            try:
                decode_update(reply, loop.result.arrays)
                problem = judge(reply, reference, loop.bounds)
            except (KeyError, ValueError) as error:
                problem = f"undecodable update ({error})"
            if problem:
                rejected += 1
                reject(record, loop.ledger, problem, merchant=name, node=reply.metadata.src_node_id)
                continue
        record.train[name] = released
        updates.append(reply)
    return updates, rejected


def aggregate(
    loop: RoundLoop,
    record: RoundRecord,
    updates: list[Message],
    secure: Exchange,
    reference: dict[str, Any],
) -> None:
    """Make the accepted updates the new global model, unless the aggregate is rejected."""
    result, strategy, client_dp = loop.result, loop.strategy, loop.client_dp
    if loop.secure:
        assert loop.options.secagg is not None
        if secure.secure_arrays is None:
            record.aggregated = False
            record.failures.append(secure.halted)
        elif problem := check_secure_aggregate(
            {n: a.numpy() for n, a in secure.secure_arrays.items()},
            reference,
            bounds=loop.bounds,
            clipping_range=loop.options.secagg.clipping_range,
            quantization_range=loop.options.secagg.quantization_range,
        ):
            record.aggregated = False
            reject(record, loop.ledger, problem)
        else:
            result.arrays = secure.secure_arrays
        return
    moments = strategy_moments(strategy)
    released = client_dp.releases if client_dp is not None else 0
    aggregated, _ = strategy.aggregate_train(record.round, updates)
    if aggregated is None:
        record.aggregated = False
    elif problem := check_global({n: a.numpy() for n, a in aggregated.items()}, reference):
        record.aggregated = False
        for attribute, value in moments.items():  # FedAdam/FedAvgM: their state goes back
            setattr(strategy, attribute, value)
        reject(record, loop.ledger, problem)
    else:
        result.arrays = aggregated
    if client_dp is not None:
        result.client_privacy = client_dp.spent()
        if loop.ledger is not None and result.client_privacy["releases"] > released:
            loop.ledger.client_release(
                server_round=record.round,
                spent=result.client_privacy,
                published=record.aggregated,
            )


def train_round(loop: RoundLoop, record: RoundRecord, messages: list[Message]) -> None:
    """Train, judge and aggregate one round; stops the run when too few merchants trained."""
    sent = exchange(loop, record, messages)
    if loop.ledger is not None:
        loop.ledger.record(sent.replies, server_round=record.round, phase="train")
    record.failures += sent.failed
    reference = {name: array.numpy() for name, array in loop.result.arrays.items()}
    updates, rejected = accept(loop, record, sent.replies, reference)
    if not updates and not record.refused and not rejected:
        raise FederationError(
            f"Round {record.round}: no merchant returned an update "
            f"({len(sent.failed)} failed: {'; '.join(sent.failed) or 'timed out'})."
        )
    minimum = loop.federation.min_train_nodes
    if len(updates) + rejected < minimum:
        record.aggregated = False
        loop.result.stopped_early = (
            f"round {record.round}: {len(updates) + rejected} merchant(s) trained, fewer "
            f"than min-train-nodes={minimum} "
            f"({len(record.refused)} refused for budget); the round was not aggregated"
        )
        logger.warning("stopping: %s", loop.result.stopped_early)
    elif not updates:  # every update was rejected: the global model stays as it was
        record.aggregated = False
    else:
        aggregate(loop, record, updates, sent, reference)
