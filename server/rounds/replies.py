"""Reading merchants' replies: who sent them, their metrics, privacy reports and refusals.

Every decoded train reply is judged before aggregation (:func:`judge`, over
:mod:`server.rounds.update_bounds`: shapes, finite values, the update's L2 norm, the
weight); a rejected one is left out and named in the round's failures.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from common.constants import (
    ARRAYS_KEY,
    DP_ACCOUNTANT_FIELD,
    DP_REASON_FIELD,
    DP_REFUSED,
    DP_UNIT_FIELD,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
    WEIGHT_KEY,
)
from server.rounds.update_bounds import UpdateBounds, check_update

if TYPE_CHECKING:
    from flwr.app import Message

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


def merchant_of(message: Message) -> str:
    """The merchant's name from its reply, or its node id when it sent none."""
    content = message.content
    if MERCHANT_KEY in content.config_records:
        return str(content.config_records[MERCHANT_KEY][MERCHANT_NAME_FIELD])
    return f"node-{message.metadata.src_node_id}"


def split(replies: Iterable[Message]) -> tuple[list[Message], list[str]]:
    """Separate error replies; order the rest by merchant so aggregation is reproducible."""
    ok, failed = [], []
    for reply in replies:
        if reply.has_error():
            failed.append(f"node-{reply.metadata.src_node_id}: {reply.error.reason}")
        else:
            ok.append(reply)
    ok.sort(key=merchant_of)  # float sums depend on order; arrival order does not repeat
    return ok, failed


def silent(sent: Iterable[Message], replies: Iterable[Message], names: dict[int, str]) -> list[str]:
    """Who was asked and never answered (a dead or disconnected merchant), by name if known."""
    answered = {r.metadata.src_node_id for r in replies}
    return [
        f"{names.get(node, f'node-{node}')}: no reply within the round timeout"
        for node in sorted({m.metadata.dst_node_id for m in sent} - answered)
    ]


def metrics(message: Message) -> dict[str, float]:
    """The numeric metrics a merchant released with its reply."""
    record: Mapping[str, Any] = message.content.metric_records.get(METRICS_KEY, {})
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float))}


def privacy_of(message: Message) -> dict[str, Any]:
    """The privacy report a merchant attached (numbers plus unit and accountant), if any."""
    fields = message.content.config_records.get(MERCHANT_KEY)
    if fields is None or DP_UNIT_FIELD not in fields:
        return {}
    report: dict[str, Any] = {k: v for k, v in metrics(message).items() if k.startswith("dp-")}
    report[DP_UNIT_FIELD] = str(fields[DP_UNIT_FIELD])
    report[DP_ACCOUNTANT_FIELD] = str(fields[DP_ACCOUNTANT_FIELD])
    return report


def refusal(message: Message) -> str:
    """The merchant's refusal reason, or "" if the reply is an update."""
    if metrics(message).get(DP_REFUSED, 0.0) < 1:
        return ""
    fields = message.content.config_records.get(MERCHANT_KEY)
    return str(fields.get(DP_REASON_FIELD, "refused")) if fields is not None else "refused"


def judge(reply: Message, reference: dict[str, Any], bounds: UpdateBounds) -> str:
    """Check one decoded train reply: "" if it may be aggregated, else why not.

    An accepted reply is left holding only what aggregation reads: its arrays
    and the weight the coordinator gives it (1 under privacy, whatever the
    merchant reported), so no extra record or metric can upset Flower's
    aggregation. Read its metrics before.
    """
    from flwr.app import MetricRecord, RecordDict

    content = reply.content
    if ARRAYS_KEY not in content.array_records:
        return "no model update in the reply"
    if METRICS_KEY not in content.metric_records:
        return f"no {METRICS_KEY} record (and so no {WEIGHT_KEY})"
    reported = content.metric_records[METRICS_KEY].get(WEIGHT_KEY)
    record = content.array_records[ARRAYS_KEY]
    arrays = {name: array.numpy() for name, array in record.items()}
    verdict = check_update(arrays, reference, weight=reported, bounds=bounds)
    if not verdict.accepted:
        return verdict.reason
    if bounds.uniform_weights and reported != 1:
        logger.info(
            "%s reported %s=%r; under privacy every merchant weighs 1",
            merchant_of(reply),
            WEIGHT_KEY,
            reported,
        )
    weight = 1 if bounds.uniform_weights else int(verdict.weight)
    reply.content = RecordDict(
        {ARRAYS_KEY: record, METRICS_KEY: MetricRecord({WEIGHT_KEY: weight})}
    )
    return ""
