"""What goes down to merchants with every instruction: the round plan and the item prior."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from common.compression import to_fields
from common.config import RoundPlan, round_plan_to_record
from common.constants import COUNTS_ARRAY, ITEM_PRIOR_KEY, RUN_NAME_FIELD, TRAINED_ARRAY
from common.models.prior import ItemPrior

if TYPE_CHECKING:
    from flwr.app import Message

    from server.rounds.records import RunOptions


def round_config(plan: RoundPlan, options: RunOptions, **extra: Any) -> dict[str, Any]:
    """The config record of an instruction: the plan, the encoding, the run's name, extras."""
    record = round_plan_to_record(plan)
    if options.compression is not None:
        record.update(to_fields(options.compression))
    if options.run_name:
        record[RUN_NAME_FIELD] = options.run_name
    record.update(extra)
    return record


def with_prior(messages: Iterable[Message], prior: ItemPrior | None) -> list[Message]:
    """Attach the public item prior (noisy counts and trained items) to every instruction."""
    out = list(messages)
    if prior is None:
        return out
    from flwr.app import Array, ArrayRecord

    record = ArrayRecord(
        {COUNTS_ARRAY: Array(prior.counts.astype("float64")), TRAINED_ARRAY: Array(prior.trained)}
    )
    for message in out:
        message.content[ITEM_PRIOR_KEY] = record
    return out
