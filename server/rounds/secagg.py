"""Secure aggregation of one training round with Flower's SecAgg+ (the only SecAgg+ wiring).

Flower 1.41 offers SecAgg+ on the server only as a legacy workflow
(``SecAggPlusWorkflow`` over a ``LegacyContext`` and a legacy strategy). This
module runs that workflow for the train phase of one round, inside fedrec's
own Message-API round loop:

- a one-shot legacy strategy hands the workflow exactly the nodes to train and
  receives the unmasked result;
- a thin grid wrapper adds fedrec's records (named global arrays, round plan,
  item prior, ledger cursor) to the workflow's train messages, and keeps the
  raw train replies, which carry each merchant's metrics, privacy report and
  ledger entries in clear (SecAgg+ hides only the arrays).

Merchants send **deltas** (their update minus the global model) with weight 1
(0 when they refuse for budget), so the workflow returns the plain mean delta
of the merchants that trained. A delta outside ``clipping-range`` is refused
by the merchant with an error (see :mod:`client.secagg`): SecAgg+ would clip
it silently.

Bad updates: the coordinator never sees one merchant's delta, so it cannot
check it. The per-merchant range check is SecAgg+'s own: Flower's quantiser
clips every value a merchant sends (its weight times its delta) to
``+-clipping-range``, so one merchant moves each value of the mean by at most
``clipping-range / m`` over ``m`` merchants. The round loop then checks the
unmasked result (:func:`server.rounds.update_bounds.check_secure_aggregate`): finite,
every mean delta within ``+-clipping-range`` (true for weights 1; a merchant
that sends a weight below 1, or one that overflows the field, can break it) and
within the run's update-norm bound; otherwise the round is not applied and the
rejection is ledgered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from common.config import SecAggConfig
from common.constants import ARRAYS_KEY, CONFIG_KEY, SERVER_ROUND_FIELD
from server.rounds.transport import FastGrid

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message
    from flwr.serverapp import Grid

logger = logging.getLogger(f"flwr.fedrec.{__name__}")

FITINS_CONFIG = "fitins.config"  # the legacy record every SecAgg+ train message carries


@dataclass
class SecAggRound:
    """What one secure round produced: the new global arrays (or None) and the raw replies."""

    arrays: ArrayRecord | None
    replies: list[Message] = field(default_factory=list)  # train-stage replies, in clear parts
    failures: list[str] = field(default_factory=list)
    halted: str = ""  # why SecAgg+ stopped without a result, if it did


class _RecordingGrid:
    """Forward to the real grid; decorate train messages and keep their replies."""

    def __init__(
        self, grid: Grid | FastGrid, decorate: Callable[[list[Message]], list[Message]]
    ) -> None:
        self._grid = grid
        self._decorate = decorate
        self.train_replies: list[Message] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        is_train = bool(messages) and FITINS_CONFIG in messages[0].content.config_records
        if is_train:
            messages = self._decorate(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if is_train:
            self.train_replies = replies
        return replies


def _one_shot_strategy() -> Any:
    from flwr.server.strategy import Strategy

    class OneShot(Strategy):  # type: ignore[misc]
        """Hands the workflow a fixed list of instructions; keeps the aggregated result."""

        def __init__(self) -> None:
            self.instructions: list[Any] = []
            self.result: list[np.ndarray] | None = None

        def initialize_parameters(self, client_manager: Any) -> None:
            return None

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return self.instructions

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            from flwr.common import parameters_to_ndarrays

            if results:
                self.result = parameters_to_ndarrays(results[0][1].parameters)
            return None, {}

        def configure_evaluate(self, *args: Any) -> list[Any]:
            return []

        def aggregate_evaluate(self, *args: Any) -> Any:
            return None, {}

        def evaluate(self, *args: Any) -> None:
            return None

    return OneShot()


def secure_train_round(
    grid: Grid,
    context: Context,
    *,
    nodes: list[int],
    server_round: int,
    arrays: ArrayRecord,
    config: ConfigRecord,
    settings: SecAggConfig,
    timeout: float,
    decorate: Callable[[list[Message]], list[Message]],
) -> SecAggRound:
    """One SecAgg+ train phase over ``nodes``: global arrays + mean of the merchants' deltas."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict
    from flwr.common import FitIns, Parameters
    from flwr.server import ServerConfig
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.compat.grid_client_proxy import GridClientProxy
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow

    if len(nodes) < 3:
        return SecAggRound(
            arrays=None,
            halted=f"SecAgg+ needs at least 3 merchants in a round, {len(nodes)} were available",
        )
    strategy = _one_shot_strategy()
    empty = Parameters(tensors=[], tensor_type="numpy.ndarray")
    strategy.instructions = [
        (
            GridClientProxy(node_id=node, grid=grid, run_id=grid.run.run_id),
            FitIns(empty, {SERVER_ROUND_FIELD: server_round}),
        )
        for node in nodes
    ]
    # The workflow keeps its round state in these two records of the (shared) context state.
    legacy = LegacyContext(
        context,
        config=ServerConfig(num_rounds=server_round),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    legacy.state.config_records["config"] = ConfigRecord({"current_round": server_round})
    legacy.state.array_records["parameters"] = ArrayRecord()

    def add_fedrec_records(messages: list[Message]) -> list[Message]:
        for message in messages:
            content = RecordDict(dict(message.content.items()))
            content[ARRAYS_KEY] = arrays
            content[CONFIG_KEY] = config
            message.content = content
        return decorate(messages)

    recording = _RecordingGrid(FastGrid(grid), add_fedrec_records)
    workflow = SecAggPlusWorkflow(
        num_shares=settings.num_shares(len(nodes)),
        reconstruction_threshold=settings.threshold_for(len(nodes)),
        max_weight=1.0,  # merchants send weight 1 (0 when refusing): the mean of deltas
        clipping_range=settings.clipping_range,
        quantization_range=settings.quantization_range,
        modulus_range=settings.modulus_range,
        timeout=timeout,
    )
    try:
        workflow(recording, legacy)  # type: ignore[arg-type]
    except ZeroDivisionError:  # every merchant sent weight 0: all refused
        strategy.result = None
    replies = recording.train_replies
    failures = [
        f"node-{r.metadata.src_node_id}: {r.error.reason}" for r in replies if r.has_error()
    ]
    answered = {r.metadata.src_node_id for r in replies}
    failures += [f"node-{n}: no reply in the secure round" for n in nodes if n not in answered]
    ok = [r for r in replies if not r.has_error()]
    if strategy.result is None:
        return SecAggRound(
            arrays=None,
            replies=ok,
            failures=failures,
            halted="SecAgg+ halted (too few merchants completed the protocol, or none trained)",
        )
    names = list(arrays.keys())
    current = arrays.to_numpy_ndarrays()
    if len(strategy.result) != len(names):
        raise ValueError(
            f"SecAgg+ returned {len(strategy.result)} arrays for {len(names)} shared parameters"
        )
    updated = {
        name: (base.astype(np.float64) + delta).astype(base.dtype)
        for name, base, delta in zip(names, current, strategy.result, strict=True)
    }
    from flwr.app import Array

    return SecAggRound(
        arrays=ArrayRecord({n: Array(a) for n, a in updated.items()}),
        replies=ok,
        failures=failures,
    )
