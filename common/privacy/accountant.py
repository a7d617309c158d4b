"""A merchant's privacy account: its fixed DP plan and every privacy event it has spent.

One account spans the merchant's whole life: the current run (its plan, calibrated
once, and its events) and every earlier run of the same state (:class:`PastRun`).
The run's budget is checked on the run's own events; the lifetime figure
composes every event of every run in one accountant, at the one delta all
runs of a state share, for the merchant's whole population: a user who
joined in a later run is counted as if present from the first (an upper
bound for them, exact for the rest).

The account is durable: it is saved (atomically) to the merchant's own disk
*before* the release it pays for leaves the merchant, so a crash can only
over-count, never forget. It is loaded again in every round and after every
restart; epsilon is always recomputed from the full event history by Opacus's
accountant (:mod:`common.privacy.accounting`), never reset per round.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from common.fileio import atomic_write_text
from common.privacy.accounting import (
    PrivacyEvent,
    calibrate_noise,
    epsilon_of,
    gaussian_noise_multiplier,
)
from common.privacy.config import PrivacyConfig

ACCOUNT_VERSION = 2  # 1: one run, no lifetime (read as a first run)
EVENT_ITEM_COUNTS = "item-counts"
EVENT_DP_SGD = "dp-sgd"
EVENT_ITEM_GRAM = "item-gram"  # a statistics model's one release (common.privacy.cooccurrence)
# the rest of epsilon as a second count release, when the federation trains nothing
EVENT_COUNTS_TOP_UP = "item-counts-top-up"
COUNT_EVENTS = (EVENT_ITEM_COUNTS, EVENT_COUNTS_TOP_UP)
TRAINING_EVENTS = (EVENT_DP_SGD, EVENT_ITEM_GRAM)  # what a train round releases


class PrivacyRefused(ConfigError):
    """A merchant refuses a DP release before computing it; nothing was released.

    The ClientApp answers with an explicit refusal (its reason reaches the
    coordinator's log and failure messages), not an error.
    """


class PrivacyBudgetExceeded(PrivacyRefused):
    """A release would take a merchant past its epsilon budget; nothing was released."""


class AccountDisagrees(PrivacyRefused):
    """The privacy account counts less than the merchant's ledger shows spent (missing, edited)."""


class CountsOnly(PrivacyBudgetExceeded):
    """A merchant too small to gain from training spent its whole budget on its item counts."""


class LifetimeBudgetExceeded(PrivacyRefused):
    """A new run's whole plan would take the merchant past its lifetime budget (its policy's
    ``epsilon-max``); refused before the run released anything."""


@dataclass(frozen=True)
class PrivacyPlan:
    """One merchant's DP settings, calibrated once for the whole training."""

    unit: str
    accountant: str
    delta: float
    target_epsilon: float
    max_grad_norm: float
    population: int  # users (or interactions) at this merchant: q is relative to this
    sample_rate: float  # q
    steps_per_round: int
    planned_rounds: int
    noise_multiplier: float  # sigma of every DP-SGD step
    count_noise_multiplier: float  # sigma of the one item-count release; 0 = none
    inputs: dict[str, Any] = field(default_factory=dict)  # what the plan was calibrated from
    trains: bool = True  # False: count-only-below; the counts take all of epsilon

    @property
    def expected_batch(self) -> float:
        return self.sample_rate * self.population


def planned_events(plan: PrivacyPlan) -> list[PrivacyEvent]:
    """The events ``plan`` spends if it runs to its end (what it was calibrated for)."""
    events = []
    if plan.count_noise_multiplier > 0:
        events.append(
            PrivacyEvent(noise_multiplier=plan.count_noise_multiplier, sample_rate=1.0, steps=1)
        )
    if plan.trains:
        events.append(
            PrivacyEvent(
                noise_multiplier=plan.noise_multiplier,
                sample_rate=plan.sample_rate,
                steps=plan.steps_per_round * plan.planned_rounds,
            )
        )
    return events


def plan_inputs(
    config: PrivacyConfig, *, batch: int, local_epochs: int, rounds: int
) -> dict[str, Any]:
    """The settings a plan depends on; a later round must bring the same ones."""
    return {
        "unit": config.unit,
        "accountant": config.accountant,
        "delta": config.delta,
        "target_epsilon": config.target_epsilon,
        "max_grad_norm": config.max_grad_norm,
        "count_share": config.count_share,
        "count_only_below": config.count_only_below,
        "local_steps": config.local_steps,
        "batch": batch,
        "local_epochs": local_epochs,
        "rounds": rounds,
    }


def plan_privacy(
    config: PrivacyConfig,
    *,
    population: int,
    batch: int,
    local_epochs: int,
    rounds: int,
    who: str = "this merchant",
    statistics: bool = False,
) -> PrivacyPlan:
    """Calibrate sigma once: item counts (if any) then ``rounds`` x steps at rate q hit epsilon.

    With ``statistics`` (a model learnt from one release of statistics, e.g. the
    item Gram of :mod:`common.privacy.cooccurrence`), each round is one Gaussian
    release over all users: q = 1 and one step per round.
    """
    if population < 1:
        raise ConfigError(f"{who} has no training examples; it cannot train privately.")
    if config.delta >= 1.0 / population:
        raise ConfigError(
            f"target-delta={config.delta:g} is not below 1/{population} (the {config.unit}s at "
            f"{who}): such a delta allows leaking some {config.unit}'s data outright. "
            f"Set target-delta below {1.0 / population:.3g}, e.g. {suggest_delta(population)}."
        )
    sample_rate = 1.0 if statistics else min(1.0, batch / population)
    steps = 1 if statistics else config.local_steps or math.ceil(local_epochs / sample_rate)
    trains = not (
        config.count_share > 0 and population * config.target_epsilon < config.count_only_below
    )
    if trains:
        count_sigma, sigma = _calibrate(config, sample_rate=sample_rate, steps=steps * rounds)
    else:  # the item counts take the whole budget; no training release will be made
        count_sigma = gaussian_noise_multiplier(
            epsilon=config.target_epsilon, delta=config.delta, accountant=config.accountant
        )
        sigma = 0.0
    return PrivacyPlan(
        unit=config.unit,
        accountant=config.accountant,
        delta=config.delta,
        target_epsilon=config.target_epsilon,
        # one unit's L2 bound: C for DP-SGD, 1 for a statistics release (its sensitivity)
        max_grad_norm=1.0 if statistics else config.max_grad_norm,
        population=population,
        sample_rate=sample_rate,
        steps_per_round=steps,
        planned_rounds=rounds,
        noise_multiplier=sigma,
        count_noise_multiplier=count_sigma,
        inputs=plan_inputs(config, batch=batch, local_epochs=local_epochs, rounds=rounds),
        trains=trains,
    )


def _calibrate(config: PrivacyConfig, *, sample_rate: float, steps: int) -> tuple[float, float]:
    """(sigma of the item counts, 0 if none; sigma of each of ``steps`` events at rate q)."""
    prior: list[PrivacyEvent] = []
    count_sigma = 0.0
    if config.count_share > 0:
        count_sigma = gaussian_noise_multiplier(
            epsilon=config.count_share * config.target_epsilon,
            delta=config.delta,
            accountant=config.accountant,
        )
        prior.append(PrivacyEvent(noise_multiplier=count_sigma, sample_rate=1.0, steps=1))
    sigma = calibrate_noise(
        target_epsilon=config.target_epsilon,
        delta=config.delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant=config.accountant,
        prior=prior,
    )
    return count_sigma, sigma


def statistics_noise(config: PrivacyConfig, *, rounds: int) -> float:
    """Sigma of each statistics release (q = 1, one per round): the same at any population."""
    return _calibrate(config, sample_rate=1.0, steps=rounds)[1]


def top_up_noise(config: PrivacyConfig) -> float:
    """Sigma of the count top-up: one more Gaussian release (q = 1, sensitivity 1) that takes
    the item counts' account to ``target_epsilon``.

    Gaussian mechanisms compose exactly (RDP and PRV alike): the counts at
    ``sigma_c`` and the top-up at ``sigma_t`` cost what one release at
    ``(sigma_c^-2 + sigma_t^-2)^-1/2`` costs, and their inverse-variance mean
    has that std, so the two together are as good as counts that took all of
    epsilon from the start.
    """
    if not config.count_share > 0:
        raise ConfigError("A count top-up needs a first count release (count-epsilon-share > 0).")
    return _calibrate(config, sample_rate=1.0, steps=1)[1]


def suggest_delta(population: int) -> str:
    """A round delta well below 1/population: the largest power of ten <= 0.1/population."""
    return f"{10 ** math.floor(math.log10(0.1 / population)):.0e}"


@dataclass(frozen=True)
class SpentEvent:
    """One privacy-relevant release: what, in which round, at what cost parameters."""

    kind: str  # EVENT_ITEM_COUNTS, EVENT_DP_SGD, EVENT_ITEM_GRAM or EVENT_COUNTS_TOP_UP
    round: int
    event: PrivacyEvent


@dataclass(frozen=True)
class PastRun:
    """An earlier run of this state: its name, plan and the events it spent."""

    run: str
    plan: PrivacyPlan
    events: tuple[SpentEvent, ...]


@dataclass
class PrivacyAccount:
    """A merchant's plan plus its spent events; epsilon is recomputed from all of them.

    ``plan`` and ``events`` are the current run's (``run``); ``past`` holds the earlier
    runs of the same state, oldest first.
    """

    plan: PrivacyPlan
    events: list[SpentEvent] = field(default_factory=list)
    run: str = ""
    past: list[PastRun] = field(default_factory=list)

    def history(self) -> list[PrivacyEvent]:
        """The current run's events."""
        return [spent.event for spent in self.events]

    def lifetime_history(self) -> list[PrivacyEvent]:
        """Every event of every run of this state, in the order they were spent."""
        return [s.event for past in self.past for s in past.events] + self.history()

    def epsilon(self, extra: list[PrivacyEvent] | None = None) -> float:
        """The current run's epsilon at its delta (with ``extra``, if given)."""
        return epsilon_of(
            self.history() + (extra or []), delta=self.plan.delta, accountant=self.plan.accountant
        )

    def lifetime_epsilon(self, extra: list[PrivacyEvent] | None = None) -> float:
        """Epsilon of every run composed (and ``extra``), at the delta all runs share."""
        return epsilon_of(
            self.lifetime_history() + (extra or []),
            delta=self.plan.delta,
            accountant=self.plan.accountant,
        )

    def started(self, run: str, plan: PrivacyPlan) -> PrivacyAccount:
        """This account with the current run moved to ``past`` (if it spent anything) and
        ``run`` under ``plan`` as the current one."""
        past = list(self.past)
        if self.events:
            past.append(PastRun(run=self.run, plan=self.plan, events=tuple(self.events)))
        return PrivacyAccount(plan=plan, events=[], run=run, past=past)

    def check_lifetime(self, extra: PrivacyEvent, *, budget: float, what: str) -> float:
        """Lifetime epsilon after ``extra``; raises :class:`PrivacyBudgetExceeded` above
        ``budget`` (the merchant's lifetime budget)."""
        after = self.lifetime_epsilon([extra])
        if after > budget * (1 + 1e-9):
            raise PrivacyBudgetExceeded(
                f"{what} would raise this merchant's lifetime epsilon (every run composed) from "
                f"{self.lifetime_epsilon():.4f} to {after:.4f} at delta={self.plan.delta:g}, "
                f"above its lifetime budget epsilon-max={budget:g} (policy.json); refused, "
                "nothing was released."
            )
        return after

    @property
    def steps(self) -> int:
        return sum(s.event.steps for s in self.events if s.kind in TRAINING_EVENTS)

    def has(self, kind: str) -> bool:
        return any(s.kind == kind for s in self.events)

    def check_budget(self, extra: PrivacyEvent, *, budget: float, what: str) -> float:
        """Epsilon after ``extra``; raises :class:`PrivacyBudgetExceeded` above ``budget``."""
        after = self.epsilon([extra])
        if after > budget * (1 + 1e-9):
            raise PrivacyBudgetExceeded(
                f"{what} would raise epsilon from {self.epsilon():.4f} to {after:.4f} at "
                f"delta={self.plan.delta:g}, above the budget epsilon-max={budget:g}; refused, "
                "nothing was released."
            )
        return after

    def record(self, kind: str, server_round: int, event: PrivacyEvent) -> None:
        self.events.append(SpentEvent(kind=kind, round=server_round, event=event))

    # --- persistence -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        def events(spent: list[SpentEvent] | tuple[SpentEvent, ...]) -> list[dict[str, Any]]:
            return [{"kind": s.kind, "round": s.round, **asdict(s.event)} for s in spent]

        return {
            "version": ACCOUNT_VERSION,
            "run": self.run,
            "plan": asdict(self.plan),
            "events": events(self.events),
            "past": [
                {"run": p.run, "plan": asdict(p.plan), "events": events(p.events)}
                for p in self.past
            ],
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any], *, source: str) -> PrivacyAccount:
        version = payload.get("version")
        if version not in (1, ACCOUNT_VERSION):
            raise ConfigError(
                f"{source}: privacy account version {version!r} is not {ACCOUNT_VERSION}; it "
                "was written by another fedrec version."
            )
        try:
            past = [
                PastRun(
                    run=str(p["run"]),
                    plan=PrivacyPlan(**p["plan"]),
                    events=tuple(_spent_events(p["events"])),
                )
                for p in payload.get("past", [])
            ]
            return cls(
                plan=PrivacyPlan(**payload["plan"]),
                events=_spent_events(payload["events"]),
                run=str(payload.get("run", "")),
                past=past,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: the privacy account is damaged ({exc}); refusing to train without "
                "knowing what was spent. Restore it from a backup."
            ) from exc

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: Path) -> PrivacyAccount | None:
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: the privacy account is not valid JSON (line {exc.lineno}: {exc.msg}); "
                "refusing to train without knowing what was spent."
            ) from exc
        return cls.from_json(payload, source=str(path))


def _spent_events(payload: list[dict[str, Any]]) -> list[SpentEvent]:
    return [
        SpentEvent(
            kind=str(e["kind"]),
            round=int(e["round"]),
            event=PrivacyEvent(
                noise_multiplier=float(e["noise_multiplier"]),
                sample_rate=float(e["sample_rate"]),
                steps=int(e["steps"]),
            ),
        )
        for e in payload
    ]
