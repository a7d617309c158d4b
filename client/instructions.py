"""The coordinator's instructions as typed values, and the checks on the fields they come from.

No Flower here: a record's fields arrive as a plain mapping (a ``ConfigRecord``
is one); :mod:`client.messages` reads the arrays and builds these values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from client.releases import SharedArrays
from common.compression import CompressionConfig
from common.config import RoundPlan, RunConfig, TrainConfig, round_plan_from_record
from common.constants import RUN_NAME_FIELD, SECAGG_FIELD
from common.errors import ConfigError
from common.models.prior import ItemPrior
from common.privacy.config import PrivacyConfig
from common.run_signature import RunRefused


@dataclass(frozen=True)
class TrainInstruction:
    """Train one round from the global ``shared`` parameters and send the update back."""

    plan: RoundPlan
    server_round: int
    shared: SharedArrays  # also the reference a compressed update is encoded against
    compression: CompressionConfig
    prior: ItemPrior | None
    run: str  # the run's name in ledger entries
    secagg: bool  # the update travels only inside a SecAgg+ sum


@dataclass(frozen=True)
class CountsInstruction:
    """Release this merchant's noisy item counts (once per training), or, with ``top_up``,
    the rest of its epsilon as a second count release (the federation trains nothing)."""

    plan: RoundPlan
    run: str
    top_up: bool = False


@dataclass(frozen=True)
class EvaluateInstruction:
    """Evaluate the global ``shared`` parameters with this merchant's users."""

    shared: SharedArrays
    k: int
    server_round: int
    prior: ItemPrior | None
    refit: TrainConfig  # users are fitted to the received items first (no privacy cost)
    run: str
    privacy: PrivacyConfig = PrivacyConfig()  # the run's: whether the merchant chooses a source
    untrained: bool = False  # the federation trained no model (train-min-items): counts only


def int_field(fields: Mapping[str, Any], key: str) -> int:
    """The integer ``fields[key]``; a missing or non-numeric value is refused, saying which."""
    value = fields.get(key)
    if not isinstance(value, (int, float)):
        raise ConfigError(f"The coordinator's message lacks an integer {key!r} (got {value!r}).")
    return int(value)


def run_name(fields: Mapping[str, Any], *, run_id: int) -> str:
    """The run's name in ledger entries: the coordinator's (stable across a resume) or Flower's."""
    name = fields.get(RUN_NAME_FIELD)
    return str(name) if name else str(run_id)


def round_plan(fields: Mapping[str, Any], run: RunConfig, *, training: bool = False) -> RoundPlan:
    """The round plan the fields carry; in a signed run it must be the plan the operator signed.

    :mod:`client.deploy.run_guard` checked the run's settings against the operator's
    signature and the merchant's policy; this binds each message's
    instructions (training, privacy, SecAgg+) to those same settings.
    """
    plan = round_plan_from_record(dict(fields))
    if not run.run_signature:
        return plan
    differs = [
        what
        for what, sent, signed in (
            ("training settings", plan.train, run.train),
            ("privacy settings", plan.privacy, run.privacy),
            ("number of rounds", plan.num_rounds, run.federation.num_rounds),
        )
        if sent != signed
    ]
    if training and bool(fields.get(SECAGG_FIELD, False)) != run.secagg.enabled:
        differs.append("secure aggregation")
    if differs:
        raise RunRefused(
            f"the coordinator's instructions differ from the signed run settings "
            f"({', '.join(differs)})"
        )
    return plan
