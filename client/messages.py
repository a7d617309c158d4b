"""Flower Messages to typed instructions and typed replies back to Messages.

The only client module besides the ClientApp that reads or writes records. A
reply carries only what a merchant may release: the shared parameters
(``arrays``), plain metrics and counts (``metrics``) and the merchant's public
name (``merchant``); when the coordinator keeps a ledger, also the merchant's
ledger entries it does not hold yet.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from client.handlers import Reply
from client.instructions import (
    CountsInstruction,
    EvaluateInstruction,
    TrainInstruction,
    int_field,
    round_plan,
    run_name,
)
from client.merchant import Merchant
from client.releases import SharedArrays
from common.compression import from_fields
from common.config import RunConfig
from common.constants import (
    ARRAYS_KEY,
    CATALOG_DIGEST_FIELD,
    CATALOG_ITEMS_FIELD,
    CATALOG_KEY,
    COMPRESSION_FIELD,
    CONFIG_KEY,
    COUNTS_ARRAY,
    COUNTS_TOP_UP_FIELD,
    DP_ACCOUNTANT_FIELD,
    DP_REASON_FIELD,
    DP_UNIT_FIELD,
    ITEM_PRIOR_KEY,
    LEDGER_ACK,
    LEDGER_ENTRIES_FIELD,
    LEDGER_HAVE,
    LEDGER_KEY,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
    SECAGG_FIELD,
    SERVER_ROUND_FIELD,
    TOP_K_FIELD,
    TRAINED_ARRAY,
    UNTRAINED_FIELD,
)
from common.models.prior import ItemPrior


def train_instruction(message: Message, run: RunConfig, *, run_id: int) -> TrainInstruction:
    record = message.content.config_records[CONFIG_KEY]
    plan = round_plan(record, run, training=True)
    server_round = int_field(record, SERVER_ROUND_FIELD)
    shared = _shared_from(message)
    compression = from_fields(record)
    return TrainInstruction(
        plan=plan,
        server_round=server_round,
        shared=shared,
        compression=compression,
        prior=_prior_from(message),
        run=run_name(record, run_id=run_id),
        secagg=bool(record.get(SECAGG_FIELD, False)),
    )


def counts_instruction(message: Message, run: RunConfig, *, run_id: int) -> CountsInstruction:
    record = message.content.config_records[CONFIG_KEY]
    return CountsInstruction(
        plan=round_plan(record, run),
        run=run_name(record, run_id=run_id),
        top_up=bool(record.get(COUNTS_TOP_UP_FIELD, False)),
    )


def evaluate_instruction(message: Message, run: RunConfig, *, run_id: int) -> EvaluateInstruction:
    record = message.content.config_records[CONFIG_KEY]
    shared = _shared_from(message)
    k = int_field(record, TOP_K_FIELD)
    server_round = int_field(record, SERVER_ROUND_FIELD)
    prior = _prior_from(message)
    plan = round_plan(record, run)
    return EvaluateInstruction(
        shared=shared,
        k=k,
        server_round=server_round,
        prior=prior,
        refit=plan.train,
        run=run_name(record, run_id=run_id),
        privacy=plan.privacy,
        untrained=bool(record.get(UNTRAINED_FIELD, False)),
    )


def catalog_request(message: Message) -> tuple[tuple[str, ...], object]:
    """The federation catalog's item keys and the SHA-256 the coordinator sent with them."""
    record = message.content.config_records[CATALOG_KEY]
    keys = tuple(str(k) for k in record[CATALOG_ITEMS_FIELD])  # type: ignore[union-attr]
    return keys, record[CATALOG_DIGEST_FIELD]


def reply_message(message: Message, merchant: Merchant, reply: Reply) -> Message:
    """``reply`` as records from ``merchant``, answering ``message``."""
    fields: dict[str, str] = {MERCHANT_NAME_FIELD: merchant.name}
    if reply.encoding:
        fields[COMPRESSION_FIELD] = reply.encoding
    privacy = reply.privacy
    if privacy is not None:
        fields[DP_UNIT_FIELD] = privacy.unit
        fields[DP_ACCOUNTANT_FIELD] = privacy.accountant
    if reply.refusal:
        fields[DP_REASON_FIELD] = reply.refusal
    metrics = {**reply.metrics, **(privacy.metrics() if privacy is not None else {})}
    content = RecordDict(
        {
            METRICS_KEY: MetricRecord(metrics),  # type: ignore[arg-type]
            MERCHANT_KEY: ConfigRecord(fields),  # type: ignore[arg-type]
        }
    )
    for key, arrays in reply.arrays.items():
        content[key] = _torch_record(arrays)
    for key, extra in reply.extra.items():
        content[key] = ConfigRecord(extra)  # type: ignore[arg-type]
    if LEDGER_KEY in message.content.config_records:  # the coordinator keeps a ledger
        told = message.content.config_records[LEDGER_KEY]
        have, ack = told.get(LEDGER_HAVE, -1), told.get(LEDGER_ACK, "")
        lines = merchant.ledger.lines_after(
            int(have) if isinstance(have, (int, float)) else -1,
            ack=ack if isinstance(ack, str) else "",
        )
        if lines:
            content[LEDGER_KEY] = ConfigRecord({LEDGER_ENTRIES_FIELD: lines})  # type: ignore[dict-item]
    return Message(content=content, reply_to=message)


def _shared_from(message: Message) -> SharedArrays:
    record = message.content.array_records[ARRAYS_KEY]
    return {name: tensor.numpy() for name, tensor in record.to_torch_state_dict().items()}


def _prior_from(message: Message) -> ItemPrior | None:
    """The coordinator's public item prior (trained items + private counts), if it sent one."""
    if ITEM_PRIOR_KEY not in message.content.array_records:
        return None
    record = message.content.array_records[ITEM_PRIOR_KEY]
    return ItemPrior(
        counts=record[COUNTS_ARRAY].numpy().astype("float64"),
        trained=record[TRAINED_ARRAY].numpy().astype("int64"),
    )


def _torch_record(arrays: Mapping[str, Any]) -> ArrayRecord:
    import numpy as np
    import torch

    return ArrayRecord(
        torch_state_dict=OrderedDict(
            (name, torch.from_numpy(np.ascontiguousarray(array))) for name, array in arrays.items()
        )
    )
