"""A merchant as typed calls: train and evaluate on its own data, keep its users local.

This is the pure core behind the ClientApp: numpy arrays of *shared*
parameters in, numpy arrays of shared parameters and plain metrics out. The
user parameters are loaded from and saved to the merchant's own disk; they
never appear in a return value.

With privacy on, every release goes through the merchant's privacy account
(:class:`client.merchant_privacy.MerchantPrivacy`): checked against its ledger
and its budget, and recorded durably *before* it happens. The values it
returns are the types of :mod:`client.releases`. When the merchant chooses
what it serves (``source-choice``, :mod:`common.source_choice`), its model is
trained without its users' last training items, which it keeps to choose on.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import numpy.typing as npt
import torch

from client.merchant_privacy import MerchantPrivacy
from client.releases import CountsRelease, PrivacyReport, Release, SharedArrays, TrainOutcome
from client.state.ledger import MerchantLedger
from client.state.store import MerchantStore
from client.training.loop import OptimizerCarry, TrainStats, fit_local, train_local
from common.config import RoundPlan, TrainConfig
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.evaluation import EvaluationResult, evaluate_model
from common.models.base import ModelConfig, Recommender, build_model
from common.models.prior import ItemPrior
from common.privacy.accountant import EVENT_DP_SGD, EVENT_ITEM_GRAM, PrivacyAccount, PrivacyPlan
from common.privacy.accounting import PrivacyEvent
from common.privacy.config import PrivacyConfig
from common.privacy.ledger import Entry
from common.seeding import numpy_rng, torch_generator
from common.source_choice import (
    POPULARITY_WEIGHTS,
    SelectionSplit,
    SourceChoice,
    candidate_ndcg,
    choose,
    hold_out_selection,
    shared_fingerprint,
)

logger = logging.getLogger(__name__)


class Merchant:
    """One party of the federation, bound to its state directory."""

    def __init__(self, store: MerchantStore, model_config: ModelConfig, *, seed: int) -> None:
        self.store = store
        self.model_config = model_config
        self.seed = seed
        self._data: UserItemData | None = None
        self._selection: SelectionSplit | None = None
        self.ledger = MerchantLedger(store.directory, store.name, key_path=store.ledger_key_path)
        self._names: tuple[list[str], list[str]] | None = None
        self.privacy = MerchantPrivacy(
            store,
            self.ledger,
            data=lambda: self.data,
            parameter_names=self.parameter_names,
            model=model_config.kind,
        )

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def data(self) -> UserItemData:
        if self._data is None:
            self._data = self.store.load_data()
        return self._data

    @property
    def selection(self) -> SelectionSplit:
        """The data less each user's last training item, and those items (to choose a source)."""
        if self._selection is None:
            self._selection = hold_out_selection(self.data)
        return self._selection

    def training_data(self, privacy: PrivacyConfig) -> UserItemData:
        """What the model is trained on under ``privacy`` (DP-SGD and the users' own fit).

        The item counts are released from all of the data: the held-out items
        then favour popularity in the choice, the safe direction.
        """
        return self.selection.train if privacy.chooses_source else self.data

    # --- privacy account (client.merchant_privacy) -------------------------------------
    def budget(self, privacy: PrivacyConfig) -> float:
        """The epsilon this merchant may spend: the federation's, or its own policy if lower."""
        return self.privacy.budget(privacy)

    def account(self, plan: RoundPlan) -> PrivacyAccount:
        """The durable account, checked against the ledger; created at first contact."""
        return self.privacy.account(plan)

    def report(self, plan: RoundPlan) -> PrivacyReport:
        return self.privacy.report(plan)

    def commit(
        self, reservation: int, released: dict[str, npt.NDArray], *, metrics: dict[str, float]
    ) -> Entry:
        """The release is handed over for sending: commit its reservation with its hash."""
        return self.privacy.commit(reservation, released, metrics=metrics)

    def release_item_counts(self, plan: RoundPlan, *, run: str = "") -> CountsRelease:
        """Noisy item counts (one Gaussian release), recorded before they are returned."""
        return self.privacy.release_item_counts(plan, run=run)

    def release_counts_top_up(self, plan: RoundPlan, *, run: str = "") -> CountsRelease:
        """The rest of epsilon as a second count release (the federation trains nothing)."""
        return self.privacy.release_counts_top_up(plan, run=run)

    def parameter_names(self) -> tuple[list[str], list[str]]:
        """Names of the (shared, local) parameters: what a release sends and what stays here."""
        if self._names is None:
            tiny = build_model(
                self.model_config, num_users=1, num_items=1, generator=torch.Generator()
            )
            self._names = (list(tiny.shared_parameters()), list(tiny.local_parameters()))
        return self._names

    # --- training and evaluation --------------------------------------------------------
    def _model(self, shared: SharedArrays, data: UserItemData | None = None) -> Recommender:
        """The global model with this merchant's users, bound to ``data`` (default: all of it)."""
        data = self.data if data is None else data
        model = build_model(
            self.model_config,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch_generator(self.seed, "user-init", self.name),
        )
        model.bind(data)  # a history model scores users from their own items, kept here
        expected = {n: tuple(p.shape) for n, p in model.shared_parameters().items()}
        received = {n: tuple(a.shape) for n, a in shared.items()}
        if not model.fits_shared(received):
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
        statistics = self.privacy.releases_statistics
        kind = EVENT_ITEM_GRAM if statistics else EVENT_DP_SGD
        if statistics:
            items = _statistics_items(shared, prior, merchant=self.name)
        account = self.privacy.open_account(plan, run=run, server_round=server_round, kind=kind)
        privacy_plan: PrivacyPlan = account.plan
        if not privacy_plan.trains:
            self.privacy.refuse_training(account, plan, run=run, server_round=server_round)
        event = PrivacyEvent(
            noise_multiplier=privacy_plan.noise_multiplier,
            sample_rate=privacy_plan.sample_rate,
            steps=privacy_plan.steps_per_round,
        )
        budget = self.budget(plan.privacy)
        reservation = self.privacy.spend(
            account,
            Release(
                run=run,
                server_round=server_round,
                kind=kind,
                event=event,
                budget=budget,
                secagg=secagg,
            ),
            what=f"Merchant {self.name}'s round {server_round}",
        )
        data = self.training_data(plan.privacy)
        if statistics:
            return self._release_gram(
                shared,
                items,
                data,
                plan,
                account,
                budget=budget,
                reservation=reservation,
                server_round=server_round,
            )
        from client.training.private import train_private

        model = self._model(shared, data)
        fit_local(
            model,
            data,
            plan.train,
            epochs=plan.train.user_epochs,
            rng=numpy_rng(self.seed, "fit-users", self.name, server_round),
        )
        stats = train_private(
            model,
            data,
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

    def _release_gram(
        self,
        shared: SharedArrays,
        items: npt.NDArray[np.int64],
        data: UserItemData,
        plan: RoundPlan,
        account: PrivacyAccount,
        *,
        budget: float,
        reservation: int,
        server_round: int,
    ) -> TrainOutcome:
        """A statistics model's round: the noisy Gram of ``items`` (already reserved)."""
        import time

        from common.privacy.cooccurrence import noisy_gram

        started = time.perf_counter()
        gram = noisy_gram(
            data,
            items,
            cap=plan.train.max_interactions_per_user,
            noise_multiplier=account.plan.noise_multiplier,
            rng=np.random.default_rng(self.store.noise_seed("item-gram", server_round)),
        )
        users = int(np.count_nonzero(np.diff(data.train_indptr)))
        return TrainOutcome(
            shared={n: np.asarray(a).copy() for n, a in shared.items()}
            | {"gram": gram.astype(np.float32)},
            stats=TrainStats(
                loss=0.0,
                steps=1,
                users=users,
                examples=data.num_train,
                seconds=time.perf_counter() - started,
            ),
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
        privacy: PrivacyConfig | None = None,
    ) -> EvaluationResult:
        """Evaluate the global model with this merchant's users.

        With ``refit``, the users are first fitted to the received global items
        (``refit.user_epochs`` user-only passes, saved): the personalisation a
        merchant does on receiving a new global model. It touches no shared
        parameter and costs no privacy. Under ``privacy`` they are fitted on the
        data the model trains on (without the items held out to choose a source).
        """
        model = self._model(shared)
        if refit is not None and refit.user_epochs > 0:
            fit_local(
                model,
                self.data if privacy is None else self.training_data(privacy),
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

    def choose_source(
        self,
        shared: SharedArrays,
        *,
        k: int,
        prior: ItemPrior | None,
        privacy: PrivacyConfig,
        run: str = "",
        server_round: int = 0,
        trained: bool = True,
    ) -> SourceChoice | None:
        """Choose what this merchant serves with ``shared`` (:mod:`common.source_choice`).

        Scored on the held-out items, with the users as :meth:`evaluate` left
        them; saved in the merchant's state, never released. ``None`` when the
        run does not choose (no privacy, ``source-choice`` off, no item prior).
        When the federation trained no model (``trained`` False), DP popularity is
        the only candidate.
        """
        if not privacy.chooses_source or prior is None:
            return None
        split = self.selection
        model = self._model(shared, split.train)
        weights = POPULARITY_WEIGHTS if trained else (1.0,)
        per_user = candidate_ndcg(model, split.held_out, prior, k=k, weights=weights)
        choice = dataclasses.replace(
            choose(per_user, k=k),
            model=shared_fingerprint(shared),
            run=run,
            server_round=server_round,
        )
        self.store.save_source_choice(choice)
        return choice


def _statistics_items(
    shared: SharedArrays, prior: ItemPrior | None, *, merchant: str
) -> npt.NDArray[np.int64]:
    """The items a statistics model's release covers: the global model's, which must be
    the item prior's trained items (set by the coordinator from the private counts)."""
    if prior is None or "items" not in shared:
        raise ConfigError(
            f"Merchant {merchant}: a statistics model (model=ease) releases co-occurrence of "
            "the items the private item counts chose; this round brought no item prior. Run it "
            "with privacy-unit=user and count-epsilon-share > 0."
        )
    items = np.rint(np.asarray(shared["items"], dtype=np.float64)).astype(np.int64)
    if not np.array_equal(items, prior.trained):
        raise ConfigError(
            f"Merchant {merchant}: the global model's {len(items)} items are not the item "
            f"prior's {len(prior.trained)} trained items; the coordinator must set them from "
            "the prior before the release (a mismatched coordinator version?)."
        )
    return items


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
