"""Benchmark: a merchant's privacy accounting per release, in round 1, 10, 50 and 200 (issue 20).

Times the accounting a merchant runs for one DP-SGD release
(:class:`client.merchant_privacy.MerchantPrivacy` and :class:`client.merchant.Merchant`):

1. ``open_account``: the account checked against the ledger's releases
   (:func:`common.privacy.account_check.account_disagreements`, one epsilon);
2. ``spend``: the budget check (epsilon with the new event), the event recorded,
   and the ledger record (:func:`common.privacy.records.release_record`: cumulative
   epsilon under RDP *and* PRV, whichever enforces the budget);
3. the reply's :class:`client.releases.PrivacyReport` (epsilon once more).

The account holds the item-count release and one event per earlier round, as a
merchant's does, with sigma calibrated for 200 rounds at epsilon 3 (600 users,
512 a batch). Per round and accountant it reports the median over ``--repeats``

* ``warm``: caches kept from the release before, whose record computed the
  epsilons of this release's starting history (a long-lived merchant process, as
  in ``fedrec simulate``), and ``cold``: caches cleared first (a fresh process);
* ``baseline``: the same path with every epsilon from Opacus's accountant handed
  the whole history (what ``epsilon_of`` did before issue 20), timed once;

and checks that every epsilon equals the baseline's. ``prv_figure_seconds`` is the
PRV epsilon alone (the ledger records it at every release, whichever accountant
enforces): Opacus sizes PRV's grid by the total steps and epsilon, so it grows with
the rounds however the history is composed. The independent checks of
``fedrec audit verify`` (:mod:`common.privacy.epsilon_check`) run at audit time, not
per release, so they are not in the path.

    python benchmarks/accounting_time.py [--repeats 5] [--rounds 1 10 50 200] [--out FILE]

Writes JSON to ``benchmarks/results/accounting_time.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from client.releases import PrivacyReport
from common.privacy import accountant as accountant_module
from common.privacy import accounting, composition, records
from common.privacy.account_check import LedgerRelease, account_disagreements
from common.privacy.accountant import EVENT_DP_SGD, EVENT_ITEM_COUNTS, PrivacyAccount, plan_privacy
from common.privacy.accounting import PrivacyEvent
from common.privacy.config import PrivacyConfig

PLANNED_ROUNDS = 200
POPULATION, BATCH = 600, 512


def _account(accountant: str) -> PrivacyAccount:
    config = PrivacyConfig(
        unit="user", target_epsilon=3.0, accountant=accountant, max_grad_norm=0.1
    )
    plan = plan_privacy(
        config, population=POPULATION, batch=BATCH, local_epochs=1, rounds=PLANNED_ROUNDS
    )
    account = PrivacyAccount(plan=plan)
    account.record(
        EVENT_ITEM_COUNTS,
        0,
        PrivacyEvent(noise_multiplier=plan.count_noise_multiplier, sample_rate=1.0, steps=1),
    )
    return account


def _round_event(account: PrivacyAccount) -> PrivacyEvent:
    plan = account.plan
    return PrivacyEvent(
        noise_multiplier=plan.noise_multiplier,
        sample_rate=plan.sample_rate,
        steps=plan.steps_per_round,
    )


def _ledger(account: PrivacyAccount) -> list[LedgerRelease]:
    return [
        LedgerRelease(
            seq=i, run="bench", kind=s.kind, round=s.round, event=s.event,
            delta=account.plan.delta, accountant=account.plan.accountant, epsilon=None,
        )
        for i, s in enumerate(account.events)
    ]  # fmt: skip


def release(account: PrivacyAccount, server_round: int) -> dict[str, Any]:
    """One release's accounting, as a merchant runs it; the epsilons it recorded."""
    releases = _ledger(account)  # what the ledger holds before this release
    assert not account_disagreements(account, releases)  # open_account
    event = _round_event(account)
    account.check_budget(event, budget=account.plan.target_epsilon, what="bench")  # spend
    account.record(EVENT_DP_SGD, server_round, event)
    record = records.release_record(
        account, run="bench", server_round=server_round, merchant="m", release=EVENT_DP_SGD,
        event=event, budget=account.plan.target_epsilon, released=[], kept_local=[],
        secagg=False, model="mf",
    )  # fmt: skip
    report = PrivacyReport.of(account, budget=account.plan.target_epsilon)
    return {
        "epsilon_rdp": record["epsilon_rdp"],
        "epsilon_prv": record["epsilon_prv"],
        "reported": report.epsilon,
    }


def _clear_caches() -> None:
    accounting._epsilon.cache_clear()
    composition.rdp_curve.cache_clear()


@contextmanager
def full_recomposition() -> Iterator[None]:
    """Every epsilon by Opacus's accountant over the whole history (the old ``epsilon_of``)."""
    saved = accountant_module.epsilon_of, records.epsilon_of
    accountant_module.epsilon_of = records.epsilon_of = accounting.opacus_epsilon  # type: ignore[assignment]
    try:
        yield
    finally:
        accountant_module.epsilon_of, records.epsilon_of = saved


def _at_round(base: PrivacyAccount, server_round: int) -> PrivacyAccount:
    """``base`` after rounds 1 .. server_round - 1, about to release round ``server_round``."""
    account = PrivacyAccount(plan=base.plan, events=list(base.events))
    for earlier in range(1, server_round):
        account.record(EVENT_DP_SGD, earlier, _round_event(account))
    return account


def _timed(fn: Callable[[], dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def _measure(base: PrivacyAccount, server_round: int, *, repeats: int) -> dict[str, Any]:
    warm, cold = [], []
    figures: dict[str, Any] = {}
    for _ in range(repeats):
        _clear_caches()
        account = _at_round(base, server_round)
        # The release before this one (item counts before round 1) recorded these epsilons.
        records.epsilons(account)
        seconds, figures = _timed(lambda a=account: release(a, server_round))  # type: ignore[misc]
        warm.append(seconds)
        _clear_caches()
        seconds, _ = _timed(lambda: release(_at_round(base, server_round), server_round))
        cold.append(seconds)
    after = _at_round(base, server_round + 1).history()  # what this release's record composed
    accounting._epsilon.cache_clear()  # RDP curves kept: the PRV figure alone
    prv_seconds, _ = _timed(
        lambda: {"prv": accounting.epsilon_of(after, delta=base.plan.delta, accountant="prv")}
    )
    with full_recomposition():
        baseline, old = _timed(lambda: release(_at_round(base, server_round), server_round))
    return {
        "events_in_history": server_round + 1,  # item counts + one per round
        "warm_seconds": statistics.median(warm),
        "cold_seconds": statistics.median(cold),
        "prv_figure_seconds": prv_seconds,  # of warm: PRV's grid grows with the steps taken
        "baseline_seconds": baseline,
        "baseline_over_warm": baseline / statistics.median(warm),
        "epsilon": figures,
        "epsilon_equals_baseline": figures == old,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, nargs="+", default=[1, 10, 50, 200])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accounting_time.json"))
    args = parser.parse_args()

    result: dict[str, Any] = {
        "benchmark": "accounting_time",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "setup": {
            "planned_rounds": PLANNED_ROUNDS,
            "population": POPULATION,
            "batch": BATCH,
            "target_epsilon": 3.0,
            "delta": 1e-6,
            "repeats": args.repeats,
        },  # fmt: skip
    }
    for name in ("rdp", "prv"):
        base = _account(name)
        plan = base.plan
        rows = {}
        for server_round in args.rounds:
            rows[str(server_round)] = row = _measure(base, server_round, repeats=args.repeats)
            print(f"{name} round {server_round}: {json.dumps(row)}", flush=True)
        first, last = rows[str(args.rounds[0])], rows[str(args.rounds[-1])]
        result[name] = {
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "steps_per_round": plan.steps_per_round,
            "rounds": rows,
            "warm_last_over_first": last["warm_seconds"] / first["warm_seconds"],
            "cold_last_over_first": last["cold_seconds"] / first["cold_seconds"],
            "baseline_last_over_first": last["baseline_seconds"] / first["baseline_seconds"],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
