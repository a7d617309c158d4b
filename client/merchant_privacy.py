"""A merchant's privacy account, kept on its own disk and checked against its ledger.

Sigma is calibrated once, at first contact, for the whole planned training
(:class:`~common.privacy.accountant.PrivacyAccount`); every release is checked
against the budget and recorded durably *before* it happens: reserve, then
commit once the release is handed over for sending.

The ledger is the source of truth for what was spent
(:mod:`common.privacy.account_check`): a missing or edited account is refused
(:class:`~common.privacy.accountant.AccountDisagrees`), never rebuilt silently.

One account spans every run of the state. A new run (another run name) gets
its own plan, calibrated for its own target epsilon on the data the state
holds now (new events included); the earlier runs move to the account's
past, and the lifetime epsilon composes them all. Before a new run releases
anything, its whole plan is composed with everything spent so far: above the
merchant's lifetime budget (``epsilon-max`` in its ``policy.json``) the run is
refused (:class:`~common.privacy.accountant.LifetimeBudgetExceeded`). Every
release is then checked against both the run's budget and the lifetime one.
Refusals are written to the ledger before they are raised.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from client.releases import CountsRelease, PrivacyReport, Release
from client.state.ledger import MerchantLedger
from client.state.store import MerchantStore
from common.config import RoundPlan
from common.constants import COUNTS_ARRAY
from common.data.dataset import UserItemData
from common.errors import ConfigError
from common.privacy.account_check import (
    LedgerRelease,
    account_disagreements,
    ledger_epsilon,
    ledger_releases,
)
from common.privacy.accountant import (
    COUNT_EVENTS,
    EVENT_COUNTS_TOP_UP,
    EVENT_ITEM_COUNTS,
    AccountDisagrees,
    CountsOnly,
    LifetimeBudgetExceeded,
    PrivacyAccount,
    PrivacyBudgetExceeded,
    PrivacyPlan,
    PrivacyRefused,
    plan_inputs,
    plan_privacy,
    planned_events,
    top_up_noise,
)
from common.privacy.accounting import PrivacyEvent
from common.privacy.config import PrivacyConfig
from common.privacy.ledger import Entry, update_digest
from common.privacy.records import release_record


class MerchantPrivacy:
    """The privacy side of one merchant: its budget, account, reservations and commits.

    ``data`` and ``parameter_names`` are called only when needed (the data is
    loaded lazily; the names describe what a release sends and what stays).
    """

    def __init__(
        self,
        store: MerchantStore,
        ledger: MerchantLedger,
        *,
        data: Callable[[], UserItemData],
        parameter_names: Callable[[], tuple[list[str], list[str]]],
        model: str,
    ) -> None:
        self.store = store
        self.model = model  # the kind trained (common.models.registry), named in each release
        self.ledger = ledger
        self._data = data
        self._parameter_names = parameter_names

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def releases_statistics(self) -> bool:
        """The model is learnt from one release of statistics per round, not DP-SGD steps."""
        from common.models.registry import MODELS

        return MODELS[self.model].statistics  # the registry says, as the run config reads it

    def budget(self, privacy: PrivacyConfig) -> float:
        """The epsilon this merchant may spend: the federation's, or its own policy if lower."""
        own = self.store.policy_epsilon_max()
        return min(privacy.budget, own) if own is not None else privacy.budget

    def account(self, plan: RoundPlan, *, run: str | None = None) -> PrivacyAccount:
        """The durable account; created (sigma calibrated once) at first contact, and given a
        new plan when ``run`` is another run than the one it holds.

        Raises :class:`AccountDisagrees` if the ledger shows more spent than
        the account holds (the file deleted or edited): never a fresh account then.
        """
        path = self.store.privacy_account_path
        account = PrivacyAccount.load(path)
        releases = self._releases()
        self._check_against_ledger(account, releases)
        if account is None:
            account = PrivacyAccount(plan=self._plan(plan), run=run or "")
            account.save(path)
            return account
        if not account.run and releases:  # written before accounts named their run
            account.run = releases[-1].run
        if run is not None and run != account.run:
            return self._start_run(account, plan, run=run)
        batch, epochs = plan.train.batch_users, plan.train.local_epochs
        wanted = plan_inputs(plan.privacy, batch=batch, local_epochs=epochs, rounds=plan.num_rounds)
        if account.plan.inputs != wanted:
            changed = sorted(k for k in wanted if account.plan.inputs.get(k) != wanted[k])
            raise ConfigError(
                f"Merchant {self.name}: the privacy plan changed after training started "
                f"({', '.join(changed)}); sigma was calibrated once for the original plan in "
                f"{path}. Keep the original settings for this run, or start a new run."
            )
        return account

    def _population(self, plan: RoundPlan) -> int:
        from client.training.private import private_population

        return len(private_population(self._data(), plan.privacy.unit))

    def _plan(self, plan: RoundPlan, *, population: int | None = None) -> PrivacyPlan:
        """Sigma calibrated for ``plan``'s whole training on the data this state holds now."""
        return plan_privacy(
            plan.privacy,
            population=self._population(plan) if population is None else population,
            batch=plan.train.batch_users,
            local_epochs=plan.train.local_epochs,
            rounds=plan.num_rounds,
            who=f"merchant {self.name}",
            statistics=self.releases_statistics,
        )

    def _start_run(self, account: PrivacyAccount, plan: RoundPlan, *, run: str) -> PrivacyAccount:
        """A new run on this state: its own plan, composed with every earlier run; refused
        (nothing released) if the unit, delta or accountant differ, or if its whole plan
        would take the lifetime epsilon past the merchant's lifetime budget."""
        new = self._plan(plan)
        spent = [p.plan for p in account.past] + ([account.plan] if account.events else [])
        old = spent[-1] if spent else new  # a plan that never spent binds nothing
        if (new.unit, new.delta, new.accountant) != (old.unit, old.delta, old.accountant):
            raise PrivacyRefused(
                f"Merchant {self.name}: run {run!r} asks for privacy-unit={new.unit}, "
                f"delta={new.delta:g}, accountant={new.accountant}, but this state's account "
                f"composes its runs at privacy-unit={old.unit}, delta={old.delta:g}, "
                f"accountant={old.accountant}: one lifetime statement needs the same three. "
                "Run with those settings, or use a fresh --state for a separate account."
            )
        started = account.started(run, new)
        lifetime = self.store.policy_epsilon_max()
        if lifetime is not None:
            before = account.lifetime_epsilon()
            after = started.lifetime_epsilon(planned_events(new))
            if after > lifetime * (1 + 1e-9):
                raise LifetimeBudgetExceeded(
                    f"Merchant {self.name}: run {run!r} plans epsilon {new.target_epsilon:g}; "
                    f"composed with the {len(started.past)} earlier run(s) of this state "
                    f"(lifetime epsilon {before:.4f}) it would reach {after:.4f} at "
                    f"delta={new.delta:g} ({new.accountant.upper()}), above this merchant's "
                    f"lifetime budget epsilon-max={lifetime:g} (policy.json). Refused before "
                    "any release; "
                    + self._what_fits(account, plan, run=run, lifetime=lifetime, new=new)
                )
        started.save(self.store.privacy_account_path)
        return started

    def _what_fits(
        self,
        account: PrivacyAccount,
        plan: RoundPlan,
        *,
        run: str,
        lifetime: float,
        new: PrivacyPlan,
    ) -> str:
        """The largest epsilon (3 decimals, rounded down) a run with ``plan``'s other settings
        could plan here without passing the lifetime budget: its sigma calibrated against
        what the budget leaves, by the same composition the refusal used."""

        def fits(epsilon: float) -> bool:
            privacy = dataclasses.replace(plan.privacy, target_epsilon=epsilon, epsilon_max=0.0)
            try:
                candidate = self._plan(
                    dataclasses.replace(plan, privacy=privacy), population=new.population
                )
            except (ConfigError, ValueError):
                return False
            composed = account.started(run, candidate).lifetime_epsilon(planned_events(candidate))
            return composed <= lifetime * (1 + 1e-9)

        low, high = 0.0, new.target_epsilon
        for _ in range(16):  # to within the run's epsilon / 65536
            middle = (low + high) / 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        largest = math.floor(low * 1000) / 1000
        if largest <= 0 or not fits(largest):
            return "no run with a positive epsilon fits what the lifetime budget leaves."
        return (
            f"the largest epsilon a run with these settings fits here is {largest:g} "
            f"(fedrec run --epsilon {largest:g})."
        )

    def _releases(self) -> list[LedgerRelease]:
        """The DP releases this merchant's ledger reserved (committed, aborted or open)."""
        return ledger_releases(self.ledger.ledger.entries)

    def _check_against_ledger(
        self, account: PrivacyAccount | None, releases: list[LedgerRelease]
    ) -> None:
        """Raise :class:`AccountDisagrees` if ``account`` counts less than the ledger shows."""
        problems = account_disagreements(account, releases)
        if not problems:
            return
        path = self.store.privacy_account_path
        raise AccountDisagrees(
            f"Merchant {self.name}: the privacy account {path} disagrees with the privacy "
            f"ledger {self.ledger.path}: {'; '.join(problems)}. The ledger shows epsilon "
            f"{ledger_epsilon(releases):.4f} already spent; refusing to train or release. "
            f"Restore {path.name} from a backup of this state (the ledger is the record of "
            "what was spent)."
        )

    def open_account(
        self, plan: RoundPlan, *, run: str, server_round: int, kind: str
    ) -> PrivacyAccount:
        """The account for a release of ``run``, checked; a refusal is ledgered, then raised."""
        try:
            return self.account(plan, run=run)
        except PrivacyRefused as refusal:
            self.ledger.refusal(
                {"run": run, "round": server_round, "merchant": self.name, "release": kind},
                reason=str(refusal),
            )
            raise

    def refuse_training(
        self,
        account: PrivacyAccount,
        plan: RoundPlan,
        *,
        run: str,
        server_round: int,
        release: str = "training",
    ) -> NoReturn:
        """A merchant whose plan gives all of epsilon to its counts refuses every training
        round (ledgered, then raised); it still serves, from the federation's releases."""
        privacy = plan.privacy
        reason = (
            f"Merchant {self.name} has {account.plan.population} {privacy.unit}s: "
            f"{account.plan.population} x epsilon {privacy.target_epsilon:g} is below "
            f"count-only-below {privacy.count_only_below:g}, so it spent its whole budget on "
            "its item counts and trains nothing (DP training on so few units adds noise, not "
            "signal); it serves from the federation's counts and model."
        )
        self.ledger.refusal(
            {"run": run, "round": server_round, "merchant": self.name, "release": release},
            reason=reason,
        )
        raise CountsOnly(reason)

    def report(self, plan: RoundPlan) -> PrivacyReport:
        return PrivacyReport.of(self.account(plan), budget=self.budget(plan.privacy))

    def _record(self, account: PrivacyAccount, release: Release) -> dict[str, object]:
        shared, local = self._parameter_names()
        return release_record(
            account,
            run=release.run,
            server_round=release.server_round,
            merchant=self.name,
            release=release.kind,
            event=release.event,
            budget=release.budget,
            released=[COUNTS_ARRAY] if release.kind in COUNT_EVENTS else shared,
            kept_local=local,
            secagg=release.secagg,
            model=self.model,
            lifetime_budget=self.store.policy_epsilon_max(),
        )

    def spend(self, account: PrivacyAccount, release: Release, *, what: str) -> int:
        """Check the budget, then record the event and reserve it in the ledger.

        A refusal is written to the ledger before it is raised; a release is
        counted in the account and reserved in the ledger before it is
        computed, so a crash from here on can only over-count. Returns the
        reservation's ledger seq.
        """
        try:
            account.check_budget(release.event, budget=release.budget, what=what)
            lifetime = self.store.policy_epsilon_max()
            if lifetime is not None:
                account.check_lifetime(release.event, budget=lifetime, what=what)
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
        account = self.open_account(plan, run=run, server_round=0, kind=EVENT_ITEM_COUNTS)
        if account.has(EVENT_ITEM_COUNTS):
            raise ConfigError(
                f"Merchant {self.name} already released its item counts for this training; "
                "a second release would spend budget the plan did not include."
            )
        return self._release_counts(
            account,
            plan,
            run=run,
            kind=EVENT_ITEM_COUNTS,
            sigma=account.plan.count_noise_multiplier,
            what=f"Merchant {self.name}'s item counts",
        )

    def release_counts_top_up(self, plan: RoundPlan, *, run: str = "") -> CountsRelease:
        """The rest of epsilon as a second noisy count release, when the federation trains
        nothing (``train-min-items``); recorded before it is returned.

        Only after this run's first count release and before any training release, once;
        a merchant whose plan gave its counts all of epsilon (``count-only-below``) refuses,
        as it has nothing left. The noise is drawn afresh (its own seed): the coordinator
        averages the two releases by inverse variance.
        """
        from common.privacy.accountant import TRAINING_EVENTS

        account = self.open_account(plan, run=run, server_round=0, kind=EVENT_COUNTS_TOP_UP)
        held = [s.kind for s in account.events]
        problem = ""
        if held.count(EVENT_ITEM_COUNTS) != 1 or EVENT_COUNTS_TOP_UP in held:
            problem = (
                "a count top-up follows exactly one item-count release of this training (this "
                f"account holds {held.count(EVENT_ITEM_COUNTS)} and "
                f"{held.count(EVENT_COUNTS_TOP_UP)} top-up(s))"
            )
        elif any(kind in TRAINING_EVENTS for kind in held):
            problem = (
                "it already released training updates in this run; a count top-up would spend "
                "budget the plan gave to training"
            )
        if problem:
            reason = f"Merchant {self.name}: {problem}. Refused, nothing was released."
            self.ledger.refusal(
                {"run": run, "round": 0, "merchant": self.name, "release": EVENT_COUNTS_TOP_UP},
                reason=reason,
            )
            raise PrivacyRefused(reason)
        if not account.plan.trains:  # its counts already took all of epsilon
            self.refuse_training(
                account, plan, run=run, server_round=0, release=EVENT_COUNTS_TOP_UP
            )
        return self._release_counts(
            account,
            plan,
            run=run,
            kind=EVENT_COUNTS_TOP_UP,
            sigma=top_up_noise(plan.privacy),
            what=f"Merchant {self.name}'s item-count top-up",
        )

    def _release_counts(
        self,
        account: PrivacyAccount,
        plan: RoundPlan,
        *,
        run: str,
        kind: str,
        sigma: float,
        what: str,
    ) -> CountsRelease:
        """One Gaussian count release at ``sigma``: budget-checked and reserved, then drawn
        with noise seeded by ``kind`` from this merchant's secret key."""
        from common.privacy.counts import noisy_item_counts

        event = PrivacyEvent(noise_multiplier=sigma, sample_rate=1.0, steps=1)
        budget = self.budget(plan.privacy)
        reservation = self.spend(
            account,
            Release(run=run, server_round=0, kind=kind, event=event, budget=budget),
            what=what,
        )
        counts = noisy_item_counts(
            self._data(),
            unit=account.plan.unit,
            cap=plan.train.max_interactions_per_user,
            noise_multiplier=sigma,
            rng=np.random.default_rng(self.store.noise_seed(kind)),
        )
        return CountsRelease(
            counts, PrivacyReport.of(account, budget=budget), reservation, noise_multiplier=sigma
        )
