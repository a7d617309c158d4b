"""The coordinator's round loop over Flower's Grid and strategy hooks.

Flower's ``Strategy.start`` runs a fixed loop; fedrec drives the same strategy
hooks (``configure_train`` / ``aggregate_train`` / ``configure_evaluate``)
itself so it can wait for merchants before round 1, keep per-merchant results,
bound every round by a timeout and evaluate only when asked.

:meth:`RoundLoop.run` reads as the run does: admit merchants, set up
(resume, catalog), collect the item prior, then per round configure, train
(:mod:`server.rounds.train`), evaluate and checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from common.config import FederationConfig, RoundPlan
from common.constants import DP_NOISE, TOP_K_FIELD, UNTRAINED_FIELD
from server.rounds import transport
from server.rounds.admission import wait_for_nodes
from server.rounds.catalog import CatalogState, admit_late_joiners, confirm_catalog
from server.rounds.checkpoint import Checkpoint, save_checkpoint, strategy_state
from server.rounds.instructions import round_config, with_prior
from server.rounds.prior import collect_item_prior
from server.rounds.records import FederationError, FederationResult, RoundRecord, RunOptions
from server.rounds.replies import merchant_of, metrics, silent, split
from server.rounds.train import train_round
from server.rounds.update_bounds import UpdateBounds, derive_bounds, non_finite

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Message
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import FedAvg

    from server.client_privacy import ClientDP
    from server.ledger import FederationLedger

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


class RoundLoop:
    """One federated run: its settings, the merchants it knows and what it produced so far.

    With privacy on, merchants first release private item counts (the item
    prior), and a merchant that refuses a round (budget) is left out from then
    on; when fewer than ``min_train_nodes`` merchants train in a round, that
    round is not aggregated and the run ends cleanly with an evaluation.
    Deployments first send the catalog, may aggregate with SecAgg+, checkpoint
    after every round and resume after the last completed one.
    """

    def __init__(
        self,
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
    ) -> None:
        self.grid, self.strategy, self.plan = grid, strategy, plan
        self.federation, self.on_round = federation, on_round
        self.client_dp, self.ledger = client_dp, ledger
        self.options = options or RunOptions()
        self.result = FederationResult(arrays=initial, rounds=[])
        self.names: dict[int, str] = {}  # node -> merchant, learnt from replies
        self.exhausted: set[str] = set()  # out of budget, by name (node ids change on restart)
        self.catalog = CatalogState()  # deployment: who confirmed the catalog, who refused it
        self.nodes: list[int] = []
        self.secure = self.options.secagg is not None and self.options.secagg.enabled
        self.untrained = ""  # why the federation trains nothing (train-min-items), if so
        self.bounds: UpdateBounds

    def run(self) -> FederationResult:
        """Run up to ``num_rounds`` rounds; evaluate every ``evaluate_every`` and at the end."""
        self.admit()
        self.set_up()
        self.collect_prior()
        self.bounds = derive_bounds(
            train=self.plan.train,
            privacy=self.plan.privacy,
            num_parameters=sum(int(a.numpy().size) for a in self.result.arrays.values()),
            max_examples=self.federation.max_merchant_examples,
            max_update_norm=self.federation.max_update_norm,
            statistics_noise=(
                self.options.statistics_noise if self.options.statistics_items else None
            ),
        )
        logger.info("accepted updates: %s", self.bounds.describe())
        if self.untrained:
            self.evaluate_only()
        else:
            self.train_rounds()
        if self.ledger is not None:
            self.ledger.close(
                rounds=len(self.result.rounds), stopped_early=self.result.stopped_early
            )
        return self.result

    def train_rounds(self) -> None:
        """Each round: configure, train, evaluate when due, checkpoint; stop early if told."""
        for server_round in range(self.result.resumed_from + 1, self.federation.num_rounds + 1):
            started = time.perf_counter()
            record = RoundRecord(round=server_round)
            messages = self.configure(record)
            if messages is None:
                break
            train_round(self, record, messages)
            self.keep_statistics_items(record)
            if self.evaluation_due(server_round):
                self.evaluate(record)
            self.finish(record, started=started)
            if self.result.stopped_early:
                break

    def evaluate_only(self) -> None:
        """The federation trains nothing (``train-min-items``): one evaluation round, in
        which each merchant chooses what it serves, and the run stops, saying why."""
        started = time.perf_counter()
        self.result.stopped_early = f"before round 1: {self.untrained}"
        logger.warning("not training: %s", self.untrained)
        record = RoundRecord(round=self.result.resumed_from + 1)
        self.evaluate(record)
        self.finish(record, started=started)

    def instruct(self, messages: list[Message]) -> list[Message]:
        """Every instruction passes the federation ledger, when there is one."""
        return self.ledger.instruct(messages) if self.ledger is not None else messages

    def admit(self) -> None:
        """Wait for ``min-nodes`` merchants."""
        federation = self.federation
        self.nodes = wait_for_nodes(
            self.grid, min_nodes=federation.min_nodes, timeout=federation.node_wait_timeout
        )
        logger.info(
            "%d merchant(s) connected; starting %d rounds", len(self.nodes), federation.num_rounds
        )

    def set_up(self) -> None:
        """Resume after a checkpoint, if asked; send the deployment catalog, if any."""
        if self.options.resume is not None:
            self.resume(self.options.resume)
        if self.options.catalog is not None:
            confirm_catalog(
                self.grid,
                self.nodes,
                self.options.catalog,
                self.catalog,
                self.names,
                federation=self.federation,
                poll=self.options.poll,
            )

    def resume(self, checkpoint: Checkpoint) -> None:
        """Continue after ``checkpoint``'s last round, with its model, history and accounts."""
        from flwr.app import Array, ArrayRecord

        from server.rounds.checkpoint import restore_strategy_state

        if problem := non_finite(checkpoint.arrays):  # written before updates were checked
            raise FederationError(
                f"The checkpoint of {checkpoint.run_name or 'this run'} after round "
                f"{checkpoint.completed_round} holds a broken global model ({problem}); resuming "
                "would send it to every merchant. Start a new run."
            )
        result = self.result
        result.arrays = ArrayRecord({n: Array(a) for n, a in checkpoint.arrays.items()})
        result.rounds = [RoundRecord.from_json(r) for r in checkpoint.rounds]
        result.privacy = dict(checkpoint.privacy)
        result.prior = checkpoint.prior
        result.resumed_from = checkpoint.completed_round
        restore_strategy_state(self.strategy, checkpoint.strategy)
        logger.info(
            "resuming %s after round %d",
            checkpoint.run_name or "the run",
            checkpoint.completed_round,
        )
        self.exhausted = set(checkpoint.exhausted)
        if self.client_dp is not None:  # its account was restored with it (build_client_dp)
            ledger = self.ledger
            if ledger is not None and (
                late := self.client_dp.count_recorded(ledger.client_releases())
            ):
                logger.warning(
                    "client-level DP: %d release(s) recorded in the ledger after the checkpoint "
                    "are counted in the account",
                    late,
                )
            result.client_privacy = self.client_dp.spent()

    def collect_prior(self) -> None:
        """With merchant-level DP, the item prior from one private count release per merchant."""
        privacy = self.plan.privacy
        if not (privacy.merchant_dp and privacy.count_share > 0 and self.result.prior is None):
            return
        released = collect_item_prior(
            self.grid,
            self.nodes,
            plan=self.plan,
            timeout=self.federation.round_timeout,
            privacy_reports=self.result.privacy,
            ledger=self.ledger,
            options=self.options,
            names=self.names,
            top=self.options.statistics_items,
        )
        self.result.prior, self.untrained = released.prior, released.untrained
        self.exhausted |= released.refused
        if self.options.statistics_items:  # the statistics model covers the prior's items
            from flwr.app import Array

            size = len(self.result.prior.trained)
            self.keep_statistics_items()
            self.result.arrays["gram"] = Array(np.zeros((size, size), dtype="float32"))

    def keep_statistics_items(self, record: RoundRecord | None = None) -> None:
        """A statistics model's items are the prior's, exactly (a float mean of equal ids,
        plain FedAvg, can be off in the last bit; merchants never change them); after an
        aggregated round its ``noise`` is the mean Gram's noise std per entry,
        ``sqrt(sum of the merchants' sigma^2) / merchants``, from their public reports."""
        if not (self.options.statistics_items and self.result.prior is not None):
            return
        from flwr.app import Array

        ids = self.result.prior.trained.astype("float32")  # exact below 2^24 items
        self.result.arrays["items"] = Array(ids)
        if record is not None and record.aggregated and record.train:
            sigmas = [self.result.privacy.get(n, {}).get(DP_NOISE, 0.0) for n in record.train]
            noise = float(np.sqrt(np.sum(np.square(sigmas)))) / len(sigmas)
            self.result.arrays["noise"] = Array(np.asarray([noise], dtype="float32"))

    def configure(self, record: RoundRecord) -> list[Message] | None:
        """The round's train instructions, or None when the run must stop before it."""
        from flwr.app import ConfigRecord
        from flwr.serverapp.exception import PrivacyBudgetExhausted

        federation = self.federation
        needed = max(1, min(federation.min_train_nodes, len(self.nodes)))  # merchants a round needs
        try:  # Flower's sampling would wait forever for merchants that are gone for good
            wait_for_nodes(self.grid, min_nodes=needed, timeout=federation.node_wait_timeout)
            configured = self.strategy.configure_train(
                record.round,
                self.result.arrays,
                ConfigRecord(round_config(self.plan, self.options)),
                self.grid,
            )
        except (FederationError, PrivacyBudgetExhausted) as stop:  # gone; client-level budget
            self.result.stopped_early = f"round {record.round}: {stop}"
            logger.warning("stopping: %s", self.result.stopped_early)
            return None
        messages = [
            m
            for m in configured
            if self.names.get(m.metadata.dst_node_id, "") not in self.exhausted
        ]
        if self.options.catalog is None:
            return messages
        return admit_late_joiners(
            self.grid,
            messages,
            self.catalog,
            self.names,
            self.options.catalog,
            federation=federation,
            poll=self.options.poll,
        )

    def evaluation_due(self, server_round: int) -> bool:
        """At the last round (or an early stop), and every ``evaluate-every`` rounds."""
        last = server_round == self.federation.num_rounds or bool(self.result.stopped_early)
        every = self.federation.evaluate_every
        return last or bool(every and server_round % every == 0)

    def evaluate(self, record: RoundRecord) -> None:
        """Every merchant evaluates the current global model on its own held-out events."""
        from flwr.app import ConfigRecord

        untrained = {UNTRAINED_FIELD: True} if self.untrained else {}
        config = ConfigRecord(
            {
                TOP_K_FIELD: self.federation.top_k,
                **round_config(self.plan, self.options, **untrained),
            }
        )
        configured = self.strategy.configure_evaluate(
            record.round, self.result.arrays, config, self.grid
        )
        sent = self.instruct(with_prior(list(configured), self.result.prior))
        received = transport.send_and_receive(
            self.grid, sent, timeout=self.federation.round_timeout, poll=self.options.poll
        )
        replies, failed = split(received)
        # a client silent past the timeout is a failure, not a smaller evaluation
        failed += [f"evaluate: {s}" for s in silent(sent, received, self.names)]
        record.count_bytes("evaluate", sent, replies)
        if self.ledger is not None:
            self.ledger.record(replies, server_round=record.round, phase="evaluate")
        record.failures += failed
        record.evaluate = {merchant_of(r): metrics(r) for r in replies}

    def finish(self, record: RoundRecord, *, started: float) -> None:
        """Countersign, log the failures, checkpoint and report the round."""
        if self.ledger is not None:
            self.ledger.countersign(record.round)
        record.seconds = time.perf_counter() - started
        self.result.rounds.append(record)
        for failure in record.failures[:10]:
            logger.warning("round %d: %s", record.round, failure)
        if len(record.failures) > 10:
            logger.warning(
                "round %d: %d more failures (all in the round history)",
                record.round,
                len(record.failures) - 10,
            )
        if self.options.checkpoint is not None:
            self.checkpoint(self.options.checkpoint, record.round)
        if self.on_round is not None:
            self.on_round(record)

    def checkpoint(self, path: Path, completed_round: int) -> None:
        """Write everything a resumed run needs after ``completed_round``."""
        result, client_dp = self.result, self.client_dp
        save_checkpoint(
            path,
            Checkpoint(
                run_name=self.options.run_name,
                completed_round=completed_round,
                config=self.options.settings,
                arrays={n: a.numpy() for n, a in result.arrays.items()},
                strategy=strategy_state(self.strategy),
                prior=result.prior,
                rounds=[r.to_json() for r in result.rounds],
                privacy=result.privacy,
                exhausted=sorted(self.exhausted),
                stopped_early=result.stopped_early,
                client_privacy=client_dp.state() if client_dp is not None else {},
            ),
        )


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
    """Run one federation (:class:`RoundLoop`) and return what it produced."""
    return RoundLoop(
        grid,
        strategy,
        initial,
        federation=federation,
        plan=plan,
        on_round=on_round,
        client_dp=client_dp,
        ledger=ledger,
        options=options,
    ).run()
