"""The coordinator's round loop over Flower's Grid and strategy hooks.

Flower's ``Strategy.start`` runs a fixed loop; fedrec drives the same strategy
hooks (``configure_train`` / ``aggregate_train`` / ``configure_evaluate``)
itself so it can wait for merchants before round 1, keep per-merchant results,
bound every round by a timeout and evaluate only when asked.

Every decoded train reply is judged before aggregation (:mod:`server.update_bounds`:
shapes, finite values, the update's L2 norm, the weight); a rejected one is left
out, named in the round's failures and in the federation ledger. Every aggregate
is checked again before it becomes the global model, so nothing non-finite is
ever checkpointed or sent to merchants; when nothing is accepted the global model
stays as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.compression import CompressionConfig, to_fields
from common.config import FederationConfig, RoundPlan, SecAggConfig, round_plan_to_record
from common.constants import (
    ARRAYS_KEY,
    CATALOG_ACTION,
    CATALOG_DIGEST_FIELD,
    CATALOG_ITEMS_FIELD,
    CATALOG_KEY,
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
    RUN_NAME_FIELD,
    SECAGG_FIELD,
    WEIGHT_KEY,
)
from common.data.catalog import ItemCatalog, catalog_digest
from common.errors import ExitCode, FedrecError
from common.models.prior import ItemPrior
from server.checkpoint import STRATEGY_STATE, Checkpoint, save_checkpoint, strategy_state
from server.transport import send_and_receive
from server.update_bounds import (
    UpdateBounds,
    check_global,
    check_secure_aggregate,
    check_update,
    derive_bounds,
    non_finite,
)
from server.updates import decode_update, payload_bytes

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Context, Message
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg

    from server.client_privacy import ClientDP
    from server.ledger import FederationLedger

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


class FederationError(FedrecError):
    """The federation cannot go on (no merchants, every merchant failed, ...)."""

    exit_code = ExitCode.FEDERATION_FAILED


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
    # merchant -> payload bytes: train-down, train-up, evaluate-down, evaluate-up
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> RoundRecord:
        return cls(**payload)

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "seconds": self.seconds,
            "train": self.train,
            "evaluate": self.evaluate,
            "failures": self.failures,
            "refused": self.refused,
            "aggregated": self.aggregated,
            "bytes": self.bytes,
        }

    def count_bytes(self, phase: str, sent: Iterable[Message], replies: Iterable[Message]) -> None:
        """Record each replying merchant's payload bytes down (instruction) and up (reply)."""
        down = {m.metadata.dst_node_id: payload_bytes(m) for m in sent}
        for reply in replies:
            entry = self.bytes.setdefault(_merchant_of(reply), {})
            entry[f"{phase}-down"] = down.get(reply.metadata.src_node_id, 0)
            entry[f"{phase}-up"] = payload_bytes(reply)


@dataclass
class FederationResult:
    arrays: ArrayRecord
    rounds: list[RoundRecord]
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)  # latest report per merchant
    prior: ItemPrior | None = None
    stopped_early: str = ""  # why the run ended before num_rounds, if it did
    client_privacy: dict[str, Any] = field(default_factory=dict)  # cross-device: coordinator's
    resumed_from: int = 0  # the last completed round a resumed run started after


@dataclass(frozen=True)
class RunOptions:
    """What a run adds to the plain round loop (deployments mostly; all optional)."""

    run_name: str = ""  # the run's name in every instruction and ledger entry
    catalog: ItemCatalog | None = None  # deployment: sent to merchants before anything else
    secagg: SecAggConfig | None = None  # SecAgg+ for the train phase
    compression: CompressionConfig | None = None  # how merchants encode their updates
    context: Context | None = None  # the ServerApp context (SecAgg+ keeps state in it)
    checkpoint: Path | None = None  # written after every round
    resume: Checkpoint | None = None  # continue after this checkpoint's last round
    settings: dict[str, Any] = field(default_factory=dict)  # the run config, for checkpoints
    poll: float = 0.1  # seconds between pulls of replies


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


def _silent(
    sent: Iterable[Message], replies: Iterable[Message], names: dict[int, str]
) -> list[str]:
    """Who was asked and never answered (a dead or disconnected merchant), by name if known."""
    answered = {r.metadata.src_node_id for r in replies}
    return [
        f"{names.get(node, f'node-{node}')}: no reply within the round timeout"
        for node in sorted({m.metadata.dst_node_id for m in sent} - answered)
    ]


def _metrics(message: Message) -> dict[str, float]:
    record: Mapping[str, Any] = message.content.metric_records.get(METRICS_KEY, {})
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


def _judge(reply: Message, reference: dict[str, Any], bounds: UpdateBounds) -> str:
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
            _merchant_of(reply),
            WEIGHT_KEY,
            reported,
        )
    weight = 1 if bounds.uniform_weights else int(verdict.weight)
    reply.content = RecordDict(
        {ARRAYS_KEY: record, METRICS_KEY: MetricRecord({WEIGHT_KEY: weight})}
    )
    return ""


def _reject(
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


def _strategy_moments(strategy: FedAvg) -> dict[str, Any]:
    """The strategy's own state that aggregation changes, to put back when it is rejected:
    FedAdam's moments; FedAvgM's velocity and the model it measures the next update from."""
    names = (*STRATEGY_STATE, "current_arrays")
    return {name: getattr(strategy, name) for name in names if hasattr(strategy, name)}


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


def _config(plan: RoundPlan, options: RunOptions, **extra: Any) -> dict[str, Any]:
    record = round_plan_to_record(plan)
    if options.compression is not None:
        record.update(to_fields(options.compression))
    if options.run_name:
        record[RUN_NAME_FIELD] = options.run_name
    record.update(extra)
    return record


def _admit_late_joiners(
    grid: Grid,
    messages: list[Message],
    nodes: tuple[set[int], set[int]],
    names: dict[int, str],
    catalog: ItemCatalog,
    *,
    federation: FederationConfig,
    poll: float,
) -> list[Message]:
    """A merchant that connects mid-run (new, or back after a restart) gets the catalog first.

    It then trains from the current global model like everyone else. A node
    that answered the catalog with an error is not asked again (it would hold
    every round up to its timeout); one that did not answer in time (still
    starting, or offline) sits this round out and is asked again next round.
    ``nodes`` is ``(ready, refused)``.
    """
    ready, refused = nodes
    fresh = [
        m.metadata.dst_node_id
        for m in messages
        if m.metadata.dst_node_id not in ready and m.metadata.dst_node_id not in refused
    ]
    if not fresh:
        return [m for m in messages if m.metadata.dst_node_id in ready]
    try:
        confirmed = send_catalog(
            grid, fresh, catalog, timeout=federation.round_timeout, poll=poll, refused=refused
        )
    except FederationError as error:
        logger.warning("late merchant(s) left out of this round: %s", error)
        confirmed = {}
    for name in confirmed.values():
        logger.info("%s joined the running federation; it starts from the current model", name)
    names.update(confirmed)
    ready.update(confirmed)
    return [m for m in messages if m.metadata.dst_node_id in ready]


def send_catalog(
    grid: Grid,
    nodes: list[int],
    catalog: ItemCatalog,
    *,
    timeout: float,
    poll: float,
    refused: set[int] | None = None,
) -> dict[int, str]:
    """Deployment set-up: every merchant encodes its log through the federation catalog.

    Returns node -> merchant name for the merchants that confirmed this catalog;
    nodes that answered with an error or another digest are added to ``refused``
    (a node that did not answer in time is in neither: it may still be starting).
    """
    from flwr.app import ConfigRecord, Message, RecordDict

    digest = catalog_digest(catalog.keys)
    record = ConfigRecord(
        {CATALOG_ITEMS_FIELD: list(catalog.keys), CATALOG_DIGEST_FIELD: digest}  # type: ignore[dict-item]
    )
    messages = [
        Message(
            content=RecordDict({CATALOG_KEY: record}),
            dst_node_id=node,
            message_type=f"query.{CATALOG_ACTION}",
        )
        for node in nodes
    ]
    received = send_and_receive(grid, messages, timeout=timeout, poll=poll)
    replies, failed = _split(received)
    if refused is not None:  # errors from the merchant itself (not the SuperLink's "unavailable")
        refused.update(
            r.metadata.src_node_id
            for r in received
            if r.has_error() and r.metadata.src_node_id in set(nodes)
        )
    names: dict[int, str] = {}
    for reply in replies:
        confirmed = reply.content.config_records.get(CATALOG_KEY)
        if confirmed is None or confirmed.get(CATALOG_DIGEST_FIELD) != digest:
            failed.append(f"{_merchant_of(reply)} did not confirm the catalog")
            if refused is not None:
                refused.add(reply.metadata.src_node_id)
            continue
        names[reply.metadata.src_node_id] = _merchant_of(reply)
    for failure in failed:
        logger.warning("catalog set-up: %s", failure)
    if not names:
        raise FederationError(
            f"No merchant accepted the federation catalog ({'; '.join(failed) or 'no replies'})."
        )
    logger.info("catalog of %d items sent; %d merchant(s) ready", len(catalog), len(names))
    return names


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
) -> tuple[ItemPrior, set[str]]:
    """Ask every merchant for one private item-count release; build the public item prior.

    Returns the prior and the merchants that refused (out of budget already).
    """
    import numpy as np
    from flwr.app import ConfigRecord, Message, RecordDict

    options = options or RunOptions()
    messages = [
        Message(
            content=RecordDict({"config": ConfigRecord(_config(plan, options))}),
            dst_node_id=node,
            message_type="query",
        )
        for node in nodes
    ]
    if ledger is not None:
        messages = ledger.instruct(messages)
    replies, failed = _split(send_and_receive(grid, messages, timeout=timeout, poll=options.poll))
    if ledger is not None:
        ledger.record(replies, server_round=0, phase="query")
    total, variance, refused = None, 0.0, set()
    reasons: list[str] = []  # "merchant: why", for the failure message
    for reply in replies:
        name = _merchant_of(reply)
        if names is not None:
            names[reply.metadata.src_node_id] = name
        privacy_reports[name] = _privacy_of(reply)
        reason = _refusal(reply)
        if reason:
            logger.warning("item counts: %s refused: %s", name, reason)
            refused.add(name)
            reasons.append(f"{name} refused: {reason}")
            continue
        counts = reply.content.array_records[ITEM_COUNTS_KEY]["counts"].numpy()
        total = counts.astype(np.float64) if total is None else total + counts
        variance += _metrics(reply)[DP_COUNT_NOISE] ** 2
    for failure in failed:
        logger.warning("item counts: %s", failure)
    if total is None:
        raise FederationError(
            "No merchant released item counts "
            f"({len(failed)} failed, {len(refused)} refused); the private run cannot start"
            + "".join(f"\n  {why}" for why in [*reasons, *failed])
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


def _resume(result: FederationResult, checkpoint: Checkpoint, strategy: FedAvg) -> set[str]:
    from flwr.app import Array, ArrayRecord

    from server.checkpoint import restore_strategy_state

    if problem := non_finite(checkpoint.arrays):  # written before updates were checked
        raise FederationError(
            f"The checkpoint of {checkpoint.run_name or 'this run'} after round "
            f"{checkpoint.completed_round} holds a broken global model ({problem}); resuming "
            "would send it to every merchant. Start a new run."
        )
    result.arrays = ArrayRecord({n: Array(a) for n, a in checkpoint.arrays.items()})
    result.rounds = [RoundRecord.from_json(r) for r in checkpoint.rounds]
    result.privacy = dict(checkpoint.privacy)
    result.prior = checkpoint.prior
    result.resumed_from = checkpoint.completed_round
    restore_strategy_state(strategy, checkpoint.strategy)
    logger.info(
        "resuming %s after round %d", checkpoint.run_name or "the run", checkpoint.completed_round
    )
    return set(checkpoint.exhausted)


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
    options: RunOptions | None = None,
) -> FederationResult:
    """Run up to ``federation.num_rounds`` rounds; evaluate every ``evaluate_every`` and at the end.

    With privacy on, merchants first release private item counts (the item
    prior), and a merchant that refuses a round (budget) is left out from then
    on; when fewer than ``min_train_nodes`` merchants train in a round, that
    round is not aggregated and the run ends cleanly with an evaluation.
    Deployments first send the catalog, may aggregate with SecAgg+, checkpoint
    after every round and resume after the last completed one.
    """
    from flwr.app import ConfigRecord
    from flwr.serverapp.exception import PrivacyBudgetExhausted

    options = options or RunOptions()
    poll = options.poll
    nodes = wait_for_nodes(
        grid, min_nodes=federation.min_nodes, timeout=federation.node_wait_timeout
    )
    logger.info("%d merchant(s) connected; starting %d rounds", len(nodes), federation.num_rounds)
    result = FederationResult(arrays=initial, rounds=[])
    names: dict[int, str] = {}  # node -> merchant, learnt from replies
    exhausted: set[str] = set()  # merchants out of budget, by name (node ids change on restart)
    if options.resume is not None:
        exhausted = _resume(result, options.resume, strategy)
        if client_dp is not None:  # its account was restored with it (build_client_dp)
            if ledger is not None and (late := client_dp.count_recorded(ledger.client_releases())):
                logger.warning(
                    "client-level DP: %d release(s) recorded in the ledger after the checkpoint "
                    "are counted in the account",
                    late,
                )
            result.client_privacy = client_dp.spent()
    ready: set[int] = set()  # deployment: nodes that confirmed the catalog
    catalog_refused: set[int] = set()  # nodes that answered the catalog with an error
    if options.catalog is not None:
        confirmed = send_catalog(
            grid,
            nodes,
            options.catalog,
            timeout=federation.round_timeout,
            poll=poll,
            refused=catalog_refused,
        )
        names.update(confirmed)
        ready.update(confirmed)
        # A node Flower still lists (e.g. a merchant's stale session after a restart) may not
        # answer: a run starts once min-nodes merchants confirmed, or node-wait-timeout passes.
        deadline = time.monotonic() + federation.node_wait_timeout
        while len(ready) < federation.min_nodes and time.monotonic() < deadline:
            pending = [n for n in grid.get_node_ids() if n not in ready | catalog_refused]
            if not pending:
                time.sleep(1.0)
                continue
            confirmed = send_catalog(
                grid,
                pending,
                options.catalog,
                timeout=max(1.0, min(federation.round_timeout, deadline - time.monotonic())),
                poll=poll,
                refused=catalog_refused,
            )
            names.update(confirmed)
            ready.update(confirmed)
    if plan.privacy.merchant_dp and plan.privacy.count_share > 0 and result.prior is None:
        result.prior, refused = collect_item_prior(
            grid,
            nodes,
            plan=plan,
            timeout=federation.round_timeout,
            privacy_reports=result.privacy,
            ledger=ledger,
            options=options,
            names=names,
        )
        exhausted |= refused
    instruct = ledger.instruct if ledger is not None else (lambda messages: messages)
    needed = max(1, min(federation.min_train_nodes, len(nodes)))  # merchants a round needs
    train_config = ConfigRecord(_config(plan, options))
    secure = options.secagg is not None and options.secagg.enabled
    bounds = derive_bounds(
        train=plan.train,
        privacy=plan.privacy,
        num_parameters=sum(int(a.numpy().size) for a in result.arrays.values()),
        max_examples=federation.max_merchant_examples,
        max_update_norm=federation.max_update_norm,
    )
    logger.info("accepted updates: %s", bounds.describe())
    for server_round in range(result.resumed_from + 1, federation.num_rounds + 1):
        started = time.perf_counter()
        record = RoundRecord(round=server_round)
        try:  # Flower's sampling would wait forever for merchants that are gone for good
            wait_for_nodes(grid, min_nodes=needed, timeout=federation.node_wait_timeout)
        except FederationError as gone:
            result.stopped_early = f"round {server_round}: {gone}"
            logger.warning("stopping: %s", result.stopped_early)
            break
        try:
            configured = strategy.configure_train(server_round, result.arrays, train_config, grid)
        except PrivacyBudgetExhausted as exhausted_budget:  # client-level DP at the coordinator
            result.stopped_early = f"round {server_round}: {exhausted_budget}"
            logger.warning("stopping: %s", result.stopped_early)
            break
        messages = [m for m in configured if names.get(m.metadata.dst_node_id, "") not in exhausted]
        if options.catalog is not None:
            messages = _admit_late_joiners(
                grid,
                messages,
                (ready, catalog_refused),
                names,
                options.catalog,
                federation=federation,
                poll=poll,
            )
        if secure:
            assert options.secagg is not None and options.context is not None
            from server.secagg import secure_train_round

            outcome = secure_train_round(
                grid,
                options.context,
                nodes=[m.metadata.dst_node_id for m in messages],
                server_round=server_round,
                arrays=result.arrays,
                config=ConfigRecord(
                    _config(plan, options, **{"server-round": server_round, SECAGG_FIELD: True})
                ),
                settings=options.secagg,
                timeout=federation.round_timeout,
                decorate=lambda ms: instruct(_with_prior(ms, result.prior)),
            )
            replies, failed = _split(outcome.replies)
            failed += outcome.failures
        else:
            sent = instruct(_with_prior(messages, result.prior))
            received = send_and_receive(grid, sent, timeout=federation.round_timeout, poll=poll)
            replies, failed = _split(received)
            failed += _silent(messages, received, names)
            record.count_bytes("train", sent, replies)
        if ledger is not None:
            ledger.record(replies, server_round=server_round, phase="train")
        record.failures += failed
        reference = {name: array.numpy() for name, array in result.arrays.items()}
        updates = []
        rejected = 0  # merchants that trained but whose update was left out
        for reply in replies:
            name = _merchant_of(reply)
            names[reply.metadata.src_node_id] = name
            if privacy := _privacy_of(reply):
                result.privacy[name] = privacy
            reason = _refusal(reply)
            if reason:
                record.refused[name] = reason
                exhausted.add(name)
                logger.warning("round %d: %s refused: %s", server_round, name, reason)
                continue
            metrics = _metrics(reply)
            if not secure:  # after the ledger checked what was received, as it was received
                try:
                    decode_update(reply, result.arrays)
                    problem = _judge(reply, reference, bounds)
                except (KeyError, ValueError) as error:
                    problem = f"undecodable update ({error})"
                if problem:
                    rejected += 1
                    _reject(record, ledger, problem, merchant=name, node=reply.metadata.src_node_id)
                    continue
            record.train[name] = metrics
            updates.append(reply)
        if not updates and not record.refused and not rejected:
            raise FederationError(
                f"Round {server_round}: no merchant returned an update "
                f"({len(failed)} failed: {'; '.join(failed) or 'timed out'})."
            )
        if len(updates) + rejected < federation.min_train_nodes:
            record.aggregated = False
            result.stopped_early = (
                f"round {server_round}: {len(updates) + rejected} merchant(s) trained, fewer "
                f"than min-train-nodes={federation.min_train_nodes} "
                f"({len(record.refused)} refused for budget); the round was not aggregated"
            )
            logger.warning("stopping: %s", result.stopped_early)
        elif not updates:  # every update was rejected: the global model stays as it was
            record.aggregated = False
        elif secure:
            assert options.secagg is not None
            if outcome.arrays is None:
                record.aggregated = False
                record.failures.append(outcome.halted)
            elif problem := check_secure_aggregate(
                {n: a.numpy() for n, a in outcome.arrays.items()},
                reference,
                bounds=bounds,
                clipping_range=options.secagg.clipping_range,
                quantization_range=options.secagg.quantization_range,
            ):
                record.aggregated = False
                _reject(record, ledger, problem)
            else:
                result.arrays = outcome.arrays
        else:
            moments = _strategy_moments(strategy)
            released = client_dp.releases if client_dp is not None else 0
            aggregated, _ = strategy.aggregate_train(server_round, updates)
            if aggregated is None:
                record.aggregated = False
            elif problem := check_global({n: a.numpy() for n, a in aggregated.items()}, reference):
                record.aggregated = False
                for attribute, value in moments.items():  # FedAdam/FedAvgM: their state goes back
                    setattr(strategy, attribute, value)
                _reject(record, ledger, problem)
            else:
                result.arrays = aggregated
            if client_dp is not None:
                result.client_privacy = client_dp.spent()
                if ledger is not None and result.client_privacy["releases"] > released:
                    ledger.client_release(
                        server_round=server_round,
                        spent=result.client_privacy,
                        published=record.aggregated,
                    )

        last = server_round == federation.num_rounds or bool(result.stopped_early)
        every = federation.evaluate_every
        if last or (every and server_round % every == 0):
            eval_config = ConfigRecord({"top-k": federation.top_k, **_config(plan, options)})
            to_evaluate = strategy.configure_evaluate(
                server_round, result.arrays, eval_config, grid
            )
            sent = instruct(_with_prior(list(to_evaluate), result.prior))
            received = send_and_receive(grid, sent, timeout=federation.round_timeout, poll=poll)
            replies, failed = _split(received)
            # a client silent past the timeout is a failure, not a smaller evaluation
            failed += [f"evaluate: {s}" for s in _silent(sent, received, names)]
            record.count_bytes("evaluate", sent, replies)
            if ledger is not None:
                ledger.record(replies, server_round=server_round, phase="evaluate")
            record.failures += failed
            record.evaluate = {_merchant_of(r): _metrics(r) for r in replies}
        if ledger is not None:
            ledger.countersign(server_round)
        record.seconds = time.perf_counter() - started
        result.rounds.append(record)
        for failure in record.failures[:10]:
            logger.warning("round %d: %s", server_round, failure)
        if len(record.failures) > 10:
            logger.warning(
                "round %d: %d more failures (all in the round history)",
                server_round,
                len(record.failures) - 10,
            )
        if options.checkpoint is not None:
            save_checkpoint(
                options.checkpoint,
                Checkpoint(
                    run_name=options.run_name,
                    completed_round=server_round,
                    config=options.settings,
                    arrays={n: a.numpy() for n, a in result.arrays.items()},
                    strategy=strategy_state(strategy),
                    prior=result.prior,
                    rounds=[r.to_json() for r in result.rounds],
                    privacy=result.privacy,
                    exhausted=sorted(exhausted),
                    stopped_early=result.stopped_early,
                    client_privacy=client_dp.state() if client_dp is not None else {},
                ),
            )
        if on_round is not None:
            on_round(record)
        if result.stopped_early:
            break
    if ledger is not None:
        ledger.close(rounds=len(result.rounds), stopped_early=result.stopped_early)
    return result
