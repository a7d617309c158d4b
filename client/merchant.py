"""A merchant as typed calls: train and evaluate on its own data, keep its users local.

This is the pure core behind the ClientApp: numpy arrays of *shared*
parameters in, numpy arrays of shared parameters and plain metrics out. The
user parameters are loaded from and saved to the merchant's own disk; they
never appear in a return value.

With privacy on, the merchant also keeps its privacy account on its own disk
(:class:`~common.privacy.accountant.PrivacyAccount`): sigma is calibrated once,
at first contact, for the whole planned training; every release is checked
against the budget and recorded durably *before* it happens.

The merchant's ledger is the source of truth for what it has spent
(:mod:`common.privacy.account_check`): before any DP release the account is
checked against the ledger's reservations, and a missing or edited account is
refused (:class:`~common.privacy.accountant.AccountDisagrees`), never rebuilt
silently. A state that already spent privacy on another run refuses a new
private run before releasing anything
(:class:`~common.privacy.accountant.StateAlreadyUsed`); a resume of the same
run goes on. Both refusals are written to the ledger.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from client.ledger import MerchantLedger
from client.state import MerchantStore
from client.training import OptimizerCarry, TrainConfig, TrainStats, fit_local, train_local
from common.config import RoundPlan
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.evaluation import EvaluationResult, evaluate_model
from common.models.base import ModelConfig, Recommender, build_model
from common.models.prior import ItemPrior
from common.privacy.account_check import (
    LedgerRelease,
    account_disagreements,
    ledger_epsilon,
    ledger_releases,
    other_runs,
)
from common.privacy.accountant import (
    EVENT_DP_SGD,
    EVENT_ITEM_COUNTS,
    AccountDisagrees,
    PrivacyAccount,
    PrivacyBudgetExceeded,
    PrivacyPlan,
    PrivacyRefused,
    StateAlreadyUsed,
    plan_inputs,
    plan_privacy,
)
from common.privacy.accounting import PrivacyEvent
from common.privacy.config import PrivacyConfig
from common.privacy.ledger import Entry, update_digest
from common.privacy.records import release_record
from common.seeding import numpy_rng, torch_generator

SharedArrays = dict[str, npt.NDArray[np.float32]]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivacyReport:
    """What a merchant has spent, with every assumption behind the number."""

    epsilon: float
    delta: float
    epsilon_max: float
    noise_multiplier: float
    count_noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    unit: str
    accountant: str

    @classmethod
    def of(cls, account: PrivacyAccount, *, budget: float) -> PrivacyReport:
        plan = account.plan
        return cls(
            epsilon=account.epsilon(),
            delta=plan.delta,
            epsilon_max=budget,
            noise_multiplier=plan.noise_multiplier,
            count_noise_multiplier=plan.count_noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            sample_rate=plan.sample_rate,
            steps=account.steps,
            unit=plan.unit,
            accountant=plan.accountant,
        )


@dataclass(frozen=True)
class TrainOutcome:
    shared: SharedArrays
    stats: TrainStats
    num_examples: int  # the FedAvg weight: training interactions, or 1 under DP (uniform)
    privacy: PrivacyReport | None = None
    reservation: int | None = None  # the ledger's reserve entry, committed when sent


@dataclass(frozen=True)
class _Release:
    """One DP release about to happen: which, when, at what cost, against which budget."""

    run: str
    server_round: int
    kind: str  # EVENT_ITEM_COUNTS or EVENT_DP_SGD
    event: PrivacyEvent
    budget: float
    secagg: bool = False  # the release reaches the coordinator only inside a SecAgg+ sum


@dataclass(frozen=True)
class CountsRelease:
    counts: npt.NDArray[np.float64]
    privacy: PrivacyReport
    reservation: int  # the ledger's reserve entry, committed when sent


class Merchant:
    """One party of the federation, bound to its state directory."""

    def __init__(self, store: MerchantStore, model_config: ModelConfig, *, seed: int) -> None:
        self.store = store
        self.model_config = model_config
        self.seed = seed
        self._data: UserItemData | None = None
        self.ledger = MerchantLedger(store.directory, store.name, key_path=store.ledger_key_path)
        self._names: tuple[list[str], list[str]] | None = None

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def data(self) -> UserItemData:
        if self._data is None:
            self._data = self.store.load_data()
        return self._data

    # --- privacy account ---------------------------------------------------------------
    def budget(self, privacy: PrivacyConfig) -> float:
        """The epsilon this merchant may spend: the federation's, or its own policy if lower."""
        own = self.store.policy_epsilon_max()
        return min(privacy.budget, own) if own is not None else privacy.budget

    def account(self, plan: RoundPlan) -> PrivacyAccount:
        """The durable account; created (sigma calibrated once) at first contact.

        Raises :class:`AccountDisagrees` if the ledger shows more spent than
        the account holds (the file deleted or edited): never a fresh account then.
        """
        from client.private_training import private_population

        path = self.store.privacy_account_path
        account = PrivacyAccount.load(path)
        self._check_against_ledger(account)
        batch, epochs = plan.train.batch_users, plan.train.local_epochs
        if account is None:
            account = PrivacyAccount(
                plan=plan_privacy(
                    plan.privacy,
                    population=len(private_population(self.data, plan.privacy.unit)),
                    batch=batch,
                    local_epochs=epochs,
                    rounds=plan.num_rounds,
                    who=f"merchant {self.name}",
                )
            )
            account.save(path)
            return account
        wanted = plan_inputs(plan.privacy, batch=batch, local_epochs=epochs, rounds=plan.num_rounds)
        if account.plan.inputs != wanted:
            changed = sorted(k for k in wanted if account.plan.inputs.get(k) != wanted[k])
            raise ConfigError(
                f"Merchant {self.name}: the privacy plan changed after training started "
                f"({', '.join(changed)}); sigma was calibrated once for the original plan in "
                f"{path}. Keep the original settings, or start a new run with fresh state."
            )
        return account

    def _releases(self) -> list[LedgerRelease]:
        """The DP releases this merchant's ledger reserved (committed, aborted or open)."""
        return ledger_releases(self.ledger.ledger.entries)

    def _check_against_ledger(self, account: PrivacyAccount | None) -> None:
        """Raise :class:`AccountDisagrees` if ``account`` counts less than the ledger shows."""
        releases = self._releases()
        problems = account_disagreements(account, releases)
        if not problems:
            return
        path = self.store.privacy_account_path
        raise AccountDisagrees(
            f"Merchant {self.name}: the privacy account {path} disagrees with the privacy "
            f"ledger {self.ledger.path}: {'; '.join(problems)}. The ledger shows epsilon "
            f"{ledger_epsilon(releases):.4f} already spent; refusing to train or release. "
            f"Restore {path.name} from a backup of this state (the ledger is the record of "
            "what was spent), or use a fresh --state for a new private run."
        )

    def _check_run(self, run: str) -> None:
        """Raise :class:`StateAlreadyUsed` if this state spent privacy on another run."""
        releases = self._releases()
        others = other_runs(releases, run=run)
        if not others:
            return
        named = ", ".join(repr(o) for o in others)
        raise StateAlreadyUsed(
            f"Merchant {self.name}: this state already spent epsilon "
            f"{ledger_epsilon(releases):.4f} on run {named} (one private training per state "
            f"until lifetime accounts land); refusing run {run!r} before any release. Use a "
            "fresh --state for a new private run."
        )

    def _open_account(
        self, plan: RoundPlan, *, run: str, server_round: int, kind: str
    ) -> PrivacyAccount:
        """The account for a release of ``run``, checked; a refusal is ledgered, then raised."""
        try:
            self._check_run(run)
            return self.account(plan)
        except PrivacyRefused as refusal:
            self.ledger.refusal(
                {"run": run, "round": server_round, "merchant": self.name, "release": kind},
                reason=str(refusal),
            )
            raise

    def report(self, plan: RoundPlan) -> PrivacyReport:
        return PrivacyReport.of(self.account(plan), budget=self.budget(plan.privacy))

    def parameter_names(self) -> tuple[list[str], list[str]]:
        """Names of the (shared, local) parameters: what a release sends and what stays here."""
        if self._names is None:
            tiny = build_model(
                self.model_config, num_users=1, num_items=1, generator=torch.Generator()
            )
            self._names = (list(tiny.shared_parameters()), list(tiny.local_parameters()))
        return self._names

    def _record(self, account: PrivacyAccount, release: _Release) -> dict[str, object]:
        shared, local = self.parameter_names()
        return release_record(
            account,
            run=release.run,
            server_round=release.server_round,
            merchant=self.name,
            release=release.kind,
            event=release.event,
            budget=release.budget,
            released=["counts"] if release.kind == EVENT_ITEM_COUNTS else shared,
            kept_local=local,
            secagg=release.secagg,
        )

    def _spend(self, account: PrivacyAccount, release: _Release, *, what: str) -> int:
        """Check the budget, then record the event and reserve it in the ledger.

        A refusal is written to the ledger before it is raised; a release is
        counted in the account and reserved in the ledger before it is
        computed, so a crash from here on can only over-count. Returns the
        reservation's ledger seq.
        """
        try:
            account.check_budget(release.event, budget=release.budget, what=what)
        except PrivacyBudgetExceeded as refusal:
            self.ledger.refusal(self._record(account, release), reason=str(refusal))
            raise
        account.record(release.kind, release.server_round, release.event)
        account.save(self.store.privacy_account_path)
        return self.ledger.reserve(self._record(account, release))

    def commit(
        self, reservation: int, released: dict[str, npt.NDArray], *, metrics: dict[str, float]
    ) -> Entry:
        """The release is handed over for sending: commit its reservation with its hash."""
        return self.ledger.commit(
            reservation, update_sha256=update_digest(released), non_dp_metrics=metrics
        )

    def release_item_counts(self, plan: RoundPlan, *, run: str = "") -> CountsRelease:
        """Noisy item counts (one Gaussian release), recorded before they are returned."""
        from common.privacy.counts import noisy_item_counts

        account = self._open_account(plan, run=run, server_round=0, kind=EVENT_ITEM_COUNTS)
        privacy_plan = account.plan
        if account.has(EVENT_ITEM_COUNTS):
            raise ConfigError(
                f"Merchant {self.name} already released its item counts for this training; "
                "a second release would spend budget the plan did not include."
            )
        event = PrivacyEvent(
            noise_multiplier=privacy_plan.count_noise_multiplier, sample_rate=1.0, steps=1
        )
        budget = self.budget(plan.privacy)
        reservation = self._spend(
            account,
            _Release(run=run, server_round=0, kind=EVENT_ITEM_COUNTS, event=event, budget=budget),
            what=f"Merchant {self.name}'s item counts",
        )
        counts = noisy_item_counts(
            self.data,
            unit=privacy_plan.unit,
            cap=plan.train.max_interactions_per_user,
            noise_multiplier=privacy_plan.count_noise_multiplier,
            rng=np.random.default_rng(self.store.noise_seed("item-counts")),
        )
        return CountsRelease(counts, PrivacyReport.of(account, budget=budget), reservation)

    # --- training and evaluation --------------------------------------------------------
    def _model(self, shared: SharedArrays) -> Recommender:
        data = self.data
        model = build_model(
            self.model_config,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch_generator(self.seed, "user-init", self.name),
        )
        model.bind(data)  # a history model scores users from their own items, kept here
        expected = {n: tuple(p.shape) for n, p in model.shared_parameters().items()}
        received = {n: tuple(a.shape) for n, a in shared.items()}
        if expected != received:
            raise ConfigError(
                f"Merchant {self.name}: the global model does not fit this merchant's model "
                f"(expected shared parameters {expected}, received {received}). "
                "Check that every party uses the same model settings and item catalog."
            )
        model.load_shared({n: torch.from_numpy(np.asarray(a)) for n, a in shared.items()})
        local = self.store.load_local()
        if local is not None:
            wanted = {n: tuple(p.shape) for n, p in model.local_parameters().items()}
            if {n: tuple(t.shape) for n, t in local.items()} == wanted:
                model.load_local(local)
            else:  # another model (a new run): user parameters start afresh, at no privacy cost
                logger.warning(
                    "merchant %s: stored user parameters do not fit this model; they start afresh",
                    self.name,
                )
        return model

    def train(
        self,
        shared: SharedArrays,
        plan: RoundPlan | TrainConfig,
        *,
        server_round: int,
        prior: ItemPrior | None = None,
        run: str = "",
        secagg: bool = False,
    ) -> TrainOutcome:
        """One round of local training; private when ``plan.privacy`` is on.

        ``secagg`` records in the ledger that the update is sent only masked
        (SecAgg+); the privacy guarantee itself does not depend on it.

        Raises :class:`~common.privacy.accountant.PrivacyBudgetExceeded` before
        touching anything if the round would exceed this merchant's budget.
        """
        if isinstance(plan, TrainConfig):
            plan = RoundPlan(train=plan, privacy=PrivacyConfig(), num_rounds=1)
        # the learning rate on its schedule over rounds
        plan = dataclasses.replace(plan, train=plan.train.at_round(server_round, plan.num_rounds))
        if plan.privacy.merchant_dp:
            return self._train_private(
                shared, plan, server_round=server_round, prior=prior, run=run, secagg=secagg
            )
        if plan.privacy.unit == "client" and plan.privacy.device_epsilon > 0:
            device = _device_plan(plan)  # record-level DP-SGD on the device
            return self._train_private(
                shared, device, server_round=server_round, prior=prior, run=run, secagg=secagg
            )
        model = self._model(shared)
        fit_local(
            model,
            self.data,
            plan.train,
            epochs=plan.train.user_epochs,
            rng=numpy_rng(self.seed, "fit-users", self.name, server_round),
        )
        carry = (
            OptimizerCarry(self.store.load_optimizer(run=run))
            if plan.train.keep_optimizer_state
            else None
        )
        stats = train_local(
            model,
            self.data,
            plan.train,
            rng=numpy_rng(self.seed, "train", self.name, server_round),
            steps=plan.privacy.local_steps,
            carry=carry,
        )
        self.store.save_local(model.local_parameters())
        if carry is not None and carry.state is not None:
            self.store.save_optimizer(carry.state, run=run)
        return TrainOutcome(
            shared={n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()},
            stats=stats,
            # Client-level DP (Flower's wrapper) accounts only uniform FedAvg weights.
            num_examples=1 if plan.privacy.unit == "client" else self.data.num_train,
        )

    def _train_private(
        self,
        shared: SharedArrays,
        plan: RoundPlan,
        *,
        server_round: int,
        prior: ItemPrior | None,
        run: str,
        secagg: bool = False,
    ) -> TrainOutcome:
        from client.private_training import train_private

        account = self._open_account(plan, run=run, server_round=server_round, kind=EVENT_DP_SGD)
        privacy_plan: PrivacyPlan = account.plan
        event = PrivacyEvent(
            noise_multiplier=privacy_plan.noise_multiplier,
            sample_rate=privacy_plan.sample_rate,
            steps=privacy_plan.steps_per_round,
        )
        budget = self.budget(plan.privacy)
        reservation = self._spend(
            account,
            _Release(
                run=run,
                server_round=server_round,
                kind=EVENT_DP_SGD,
                event=event,
                budget=budget,
                secagg=secagg,
            ),
            what=f"Merchant {self.name}'s round {server_round}",
        )
        model = self._model(shared)
        fit_local(
            model,
            self.data,
            plan.train,
            epochs=plan.train.user_epochs,
            rng=numpy_rng(self.seed, "fit-users", self.name, server_round),
        )
        stats = train_private(
            model,
            self.data,
            plan.train,
            privacy_plan,
            rng=numpy_rng(self.seed, "train", self.name, server_round),
            generator=torch.Generator().manual_seed(self.store.noise_seed("dp-sgd", server_round)),
            item_pool=prior.trained if prior is not None else None,
        )
        self.store.save_local(model.local_parameters())
        return TrainOutcome(
            shared={n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()},
            stats=stats,
            num_examples=1,
            privacy=PrivacyReport.of(account, budget=budget),
            reservation=reservation,
        )

    def evaluate(
        self,
        shared: SharedArrays,
        *,
        k: int,
        server_round: int,
        prior: ItemPrior | None = None,
        refit: TrainConfig | None = None,
    ) -> EvaluationResult:
        """Evaluate the global model with this merchant's users.

        With ``refit``, the users are first fitted to the received global items
        (``refit.user_epochs`` user-only passes, saved): the personalisation a
        merchant does on receiving a new global model. It touches no shared
        parameter and costs no privacy.
        """
        model = self._model(shared)
        if refit is not None and refit.user_epochs > 0:
            fit_local(
                model,
                self.data,
                refit,
                epochs=refit.user_epochs,
                rng=numpy_rng(self.seed, "refit-users", self.name, server_round),
            )
            self.store.save_local(model.local_parameters())
        return evaluate_model(
            model,
            self.data,
            k=k,
            rng=numpy_rng(self.seed, "evaluate", self.name, server_round),
            prior=prior,
        )


def _device_plan(plan: RoundPlan) -> RoundPlan:
    """On-device DP-SGD in cross-device mode: record-level, at ``device-epsilon``."""
    privacy = plan.privacy
    return RoundPlan(
        train=plan.train,
        privacy=PrivacyConfig(
            unit="interaction",
            target_epsilon=privacy.device_epsilon,
            delta=privacy.delta,
            max_grad_norm=privacy.max_grad_norm,
            accountant=privacy.accountant,
            count_share=0.0,
            local_steps=privacy.local_steps,
        ),
        num_rounds=plan.num_rounds,
    )
