"""Cumulative epsilon along one merchant's chain: it never falls, and it equals its events.

Every ``reserve`` entry carries the privacy event it pays for (sigma, q and
steps), the plan's delta and the cumulative epsilon *after* it under both
Opacus accountants (:func:`common.privacy.records.release_record`); a
``commit`` repeats its reservation's body; a budget ``refusal`` states the
epsilon already spent. The merchant's account spends exactly the reserved
events, in ledger order, so the ledger holds enough to recompute each figure:

* **RDP** is recomputed at every such entry, exactly as
  :func:`common.privacy.accounting.epsilon_of` does (Opacus's ``compute_rdp``
  per event, summed in order, converted at the same orders), but with the
  per-event RDP curves cached, so a long chain costs one curve per distinct
  event rather than one accountant run per entry.
* **PRV** (seconds per history) is recomputed at the newest entry that records
  it, the figure a report states; earlier PRV figures are checked for never
  falling (by more than PRV's own error, 0.01).

A recorded epsilon *below* its events is a problem (an understatement); one
*above* them is a note: the account can hold an event whose reservation was
never written (the merchant stopped between saving its account and
reserving), which over-counts and is safe. A chain whose reservations do not
carry their events (older ledgers, hand-made test ledgers) is checked for
monotonicity only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from common.privacy.accounting import PRV_EPS_ERROR, RDP_ORDERS, PrivacyEvent, epsilon_of
from common.privacy.ledger import COMMIT, REFUSAL, RESERVE, Entry, Problem

EPSILON_FIELDS = ("epsilon_rdp", "epsilon_prv")
REL_TOL = 1e-9  # recomputation is deterministic; this only absorbs summation order
PRV_REL_TOL = 1e-6


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _event(body: dict[str, Any]) -> PrivacyEvent | None:
    try:
        return PrivacyEvent(
            noise_multiplier=float(body["noise_multiplier"]),
            sample_rate=float(body["sample_rate"]),
            steps=int(body["steps"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class EpsilonReplay:
    """Opacus's accountants over ledger events, with caches shared by every chain checked."""

    _curves: dict[PrivacyEvent, npt.NDArray[np.float64]] = field(default_factory=dict)
    _prv: dict[tuple[tuple[PrivacyEvent, ...], float], float | None] = field(default_factory=dict)

    def curve(self, event: PrivacyEvent) -> npt.NDArray[np.float64]:
        """RDP of ``event`` at :data:`RDP_ORDERS` (what Opacus's RDP accountant sums)."""
        if event not in self._curves:
            from opacus.accountants.analysis import rdp as analysis

            self._curves[event] = np.asarray(
                analysis.compute_rdp(
                    q=event.sample_rate,
                    noise_multiplier=event.noise_multiplier,
                    steps=event.steps,
                    orders=list(RDP_ORDERS),
                ),
                dtype=np.float64,
            )
        return self._curves[event]

    @staticmethod
    def rdp_epsilon(total: npt.NDArray[np.float64] | None, *, delta: float) -> float:
        """Epsilon at ``delta`` of summed RDP curves (``None``: no step was taken)."""
        if total is None:
            return 0.0
        from opacus.accountants.analysis import rdp as analysis

        eps, _ = analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=total, delta=delta)
        return float(eps)

    def prv_epsilon(self, events: list[PrivacyEvent], *, delta: float) -> float | None:
        key = (tuple(events), delta)
        if key not in self._prv:
            try:
                self._prv[key] = epsilon_of(events, delta=delta, accountant="prv")
            except (ValueError, RuntimeError, OverflowError):  # PRV has a bounded domain
                self._prv[key] = None
        return self._prv[key]


@dataclass
class EpsilonCheck:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_epsilons(
    entries: list[Entry],
    *,
    source: str,
    replay: EpsilonReplay,
    lines: list[int] | None = None,
) -> EpsilonCheck:
    """Monotone cumulative epsilon, and each figure recomputed from the events before it."""
    out = EpsilonCheck()
    events: list[PrivacyEvent] = []
    totals: list[npt.NDArray[np.float64] | None] = [None]  # RDP sum after n events
    exact = True  # every reservation so far carried its event
    upto: dict[int, int | None] = {}  # reserve seq -> events counted once it was made
    highest: dict[str, tuple[float, int]] = {}
    newest_prv: tuple[int, float, int, float] | None = None  # index, recorded, events, delta

    def problem(index: int, message: str) -> None:
        line = lines[index] if lines and index < len(lines) else None
        out.problems.append(
            Problem("epsilon", message, source=source, line=line, seq=entries[index].seq)
        )

    for index, entry in enumerate(entries):
        body = entry.body
        if entry.kind == RESERVE:
            event = _event(body)
            if event is None:
                exact = False
            else:
                events.append(event)
                last = totals[-1]
                totals.append(
                    last if event.steps == 0 else
                    (replay.curve(event) if last is None else last + replay.curve(event))
                )  # fmt: skip
            upto[entry.seq] = len(events) if exact else None
        if entry.kind not in (RESERVE, COMMIT, REFUSAL):
            continue
        for name in EPSILON_FIELDS:
            value = _number(body.get(name))
            if value is None:
                continue
            if name in highest:
                top, top_seq = highest[name]
                slack = PRV_EPS_ERROR if name == "epsilon_prv" else REL_TOL * max(1.0, top)
                if value < top - slack:
                    problem(
                        index,
                        f"{entry.party}'s cumulative {name} falls from {top:.6g} (entry seq "
                        f"{top_seq}) to {value:.6g}: epsilon spent can never decrease",
                    )
            if name not in highest or value > highest[name][0]:
                highest[name] = (value, entry.seq)
        if entry.kind == COMMIT:
            reserve_seq = body.get("reserve_seq")
            count = upto.get(reserve_seq) if isinstance(reserve_seq, int) else None
        else:
            count = len(events) if exact else None
        delta = _number(body.get("delta"))
        if count is None or delta is None:
            continue
        recorded = _number(body.get("epsilon_rdp"))
        if recorded is not None:
            expected = replay.rdp_epsilon(totals[count], delta=delta)
            _compare(out, problem, index, entries[index], "epsilon_rdp", recorded, expected, count)
        recorded_prv = _number(body.get("epsilon_prv"))
        if recorded_prv is not None:
            newest_prv = (index, recorded_prv, count, delta)
    if newest_prv is not None:
        index, recorded, count, delta = newest_prv
        expected_prv = replay.prv_epsilon(events[:count], delta=delta)
        if expected_prv is not None:
            _compare(
                out, problem, index, entries[index], "epsilon_prv", recorded, expected_prv, count,
                rel_tol=PRV_REL_TOL,
            )  # fmt: skip
    return out


def _compare(
    out: EpsilonCheck,
    problem: Any,
    index: int,
    entry: Entry,
    name: str,
    recorded: float,
    expected: float,
    count: int,
    *,
    rel_tol: float = REL_TOL,
) -> None:
    slack = rel_tol * max(1.0, abs(expected))
    what = f"the {count} privacy event(s) reserved up to it give {expected:.6g} by Opacus"
    if recorded < expected - slack:
        problem(
            index,
            f"{entry.party}'s entry records {name} = {recorded:.6g} but {what}: the spend is "
            "understated",
        )
    elif recorded > expected + slack:
        out.notes.append(
            f"{entry.party}: entry seq {entry.seq} records {name} = {recorded:.6g}, more than "
            f"{what}; the account spent an event the ledger never reserved (a stop between "
            "saving the account and reserving): over-counted, which is safe"
        )
