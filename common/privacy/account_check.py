"""The merchant's ledger is the source of truth for what it has spent; the account must agree.

A merchant keeps two records of its privacy spending: the *account*
(``privacy_account.json``, :class:`~common.privacy.accountant.PrivacyAccount`),
which the budget check reads, and the *ledger* (signed, hash-chained), where
every DP release is reserved before it is computed. The account is a plain
file: deleting it used to reset epsilon to zero, editing it (dropping an
event, lowering steps) lowered it. This module compares the two, with no
Flower and no I/O: :func:`ledger_releases` reads the ledger's ``reserve``
entries (committed, aborted or still open: an aborted reservation's epsilon
stays counted), :func:`account_disagreements` lists every way the account
falls short of them. The account and the ledger both span every run of the state.

**Refuse, do not rebuild.** Each reserve entry records its event exactly
(kind, round, sigma, q, steps; JSON floats round-trip exactly) and the
plan's delta and accountant, so the spent epsilon *could* be recomputed from
the ledger alone. The account, though, also holds the plan's calibration
``inputs`` (batch, epochs, rounds, count share, ...) and ``steps_per_round``,
which the ledger does not record: a rebuilt account would have to take them
from the settings of the message being answered, the very settings the
account exists to hold fixed. A missing or edited account is also a sign the
state was tampered with or restored badly, which an operator should look at.
So the merchant refuses (naming the file, what disagrees and the epsilon the
ledger shows spent) and the fix is to restore the account from a backup.

An account may hold *more* than the ledger: the account is saved before the
reservation is written, so a crash between the two over-counts. That is
allowed; only an account that counts less than the ledger is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from common.privacy.accountant import (
    EVENT_COUNTS_TOP_UP,
    EVENT_DP_SGD,
    EVENT_ITEM_COUNTS,
    EVENT_ITEM_GRAM,
    PrivacyAccount,
)
from common.privacy.accounting import PrivacyEvent
from common.privacy.ledger import RESERVE, Entry
from common.privacy.records import enforced_epsilon

DP_RELEASES = (EVENT_ITEM_COUNTS, EVENT_DP_SGD, EVENT_ITEM_GRAM, EVENT_COUNTS_TOP_UP)
SHOWN = 5  # disagreements listed one by one; the rest are counted
RELATIVE_TOLERANCE = 1e-9  # epsilon recomputed from the same events may differ in the last bits


@dataclass(frozen=True)
class LedgerRelease:
    """One DP release as the ledger reserved it."""

    seq: int
    run: str
    kind: str  # one of DP_RELEASES
    round: int
    event: PrivacyEvent
    delta: float
    accountant: str
    epsilon: float | None  # cumulative epsilon under ``accountant`` after this release

    @property
    def key(self) -> tuple[str, int, float, float, int]:
        return (
            self.kind,
            self.round,
            self.event.noise_multiplier,
            self.event.sample_rate,
            self.event.steps,
        )

    def describe(self) -> str:
        return (
            f"ledger entry {self.seq} ({self.kind}, run {self.run!r}, round {self.round}: "
            f"sigma={self.event.noise_multiplier:.6g}, q={self.event.sample_rate:.6g}, "
            f"steps={self.event.steps})"
        )


def ledger_releases(entries: Sequence[Entry]) -> list[LedgerRelease]:
    """Every DP release the ledger reserved, in order (committed, aborted or open alike)."""
    releases = []
    for entry in entries:
        body = entry.body
        if entry.kind != RESERVE or body.get("dp") is False:
            continue
        if body.get("release") not in DP_RELEASES:
            continue
        releases.append(
            LedgerRelease(
                seq=entry.seq,
                run=str(body.get("run", "")),
                kind=str(body["release"]),
                round=int(body.get("round", 0)),
                event=PrivacyEvent(
                    noise_multiplier=float(body["noise_multiplier"]),
                    sample_rate=float(body["sample_rate"]),
                    steps=int(body["steps"]),
                ),
                delta=float(body["delta"]),
                accountant=str(body.get("accountant", "rdp")),
                epsilon=enforced_epsilon(body),
            )
        )
    return releases


def ledger_epsilon(releases: Sequence[LedgerRelease]) -> float:
    """The highest cumulative epsilon the ledger recorded (0 when it holds no release)."""
    return max((r.epsilon for r in releases if r.epsilon is not None), default=0.0)


def account_disagreements(
    account: PrivacyAccount | None, releases: Sequence[LedgerRelease]
) -> list[str]:
    """Every way ``account`` counts less than the ledger's ``releases``; empty when it agrees.

    ``account`` is ``None`` when the file is missing. Extra events in the
    account are fine (a crash between saving the account and reserving over-counts).
    """
    if not releases:
        return []
    if account is None:
        return [f"the account is missing but the ledger holds {len(releases)} DP release(s)"]
    problems: list[str] = []
    plan = account.plan
    settings = {(r.delta, r.accountant) for r in releases}
    for delta, accountant in sorted(settings):
        if (delta, accountant) != (plan.delta, plan.accountant):
            problems.append(
                f"the account's plan is delta={plan.delta:g} ({plan.accountant}) but the ledger "
                f"reserved releases at delta={delta:g} ({accountant})"
            )
    spent = [s for past in account.past for s in past.events] + account.events
    held = Counter(
        (s.kind, s.round, s.event.noise_multiplier, s.event.sample_rate, s.event.steps)
        for s in spent
    )
    missing: list[LedgerRelease] = []
    for release in releases:
        if held[release.key] > 0:
            held[release.key] -= 1
        else:
            missing.append(release)
    if missing:
        shown = "; ".join(r.describe() for r in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        problems.append(
            f"{len(missing)} of the ledger's {len(releases)} DP release(s) have no matching event "
            f"in the account ({len(spent)} event(s)): {shown}{more}"
        )
    recorded = ledger_epsilon(releases)
    epsilon = account.lifetime_epsilon()
    if epsilon < recorded * (1 - RELATIVE_TOLERANCE):
        problems.append(
            f"the account's epsilon {epsilon:.4f} is below the {recorded:.4f} the ledger recorded"
        )
    return problems
