"""What a ledger entry says about one release: every assumption behind its epsilon.

Pure builders of entry bodies. A DP release record names the run, round and
merchant; the unit of privacy and the adjacency it implies; the sampling
scheme; sigma, C, q and steps; delta; cumulative epsilon under both Opacus
accountants (RDP and PRV) and which one enforces the budget; the budget and
what remains; the library versions that computed it; the model kind and which
parameters were released and which stayed local; whether secure aggregation was on. Values
sent in clear beside a release are listed as non-DP.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from typing import Any

from common.privacy.accountant import COUNT_EVENTS, EVENT_ITEM_GRAM, PrivacyAccount
from common.privacy.accounting import PrivacyEvent, epsilon_of
from common.privacy.config import ACCOUNTANTS, UNIT_DESCRIPTIONS, sampling_description
from common.privacy.ledger import finite

ADJACENCY = {
    "user": "add or remove one user of the merchant, with all of their interactions",
    "interaction": "add or remove one interaction (record-level; weaker than user-level)",
    "client": "add or remove one client (device) and all of its data",
}
COUNT_SAMPLING = (
    "none: one Gaussian release over all units (each unit's counts scaled to L2 norm 1)"
)
GRAM_SAMPLING = (
    "none: one Gaussian release over all units of the trained items' co-occurrence (each "
    "unit's vector over those items scaled to L2 norm 1, so the released upper triangle of "
    "the Gram matrix has L2 sensitivity 1)"
)
JOINT_DP = (
    "joint DP: users' own parameters are trained locally, never released, and depend only on "
    "that user's data and the released (noised) shared parameters"
)


@cache
def library_versions() -> dict[str, str]:
    """Versions of what computed and enforced the numbers (read once per process)."""
    versions = {"python": platform.python_version()}
    for name in ("fedrec", "opacus", "torch", "flwr", "numpy", "cryptography"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def epsilon_key(accountant: str) -> str:
    """The record field holding ``accountant``'s cumulative epsilon (``epsilon_rdp``, ...)."""
    return f"epsilon_{accountant}"


def enforced_epsilon(record: Mapping[str, Any]) -> float | None:
    """Cumulative epsilon of a ``reserve`` record by the accountant that enforced its budget."""
    value = record.get(epsilon_key(str(record.get("accountant", "rdp"))))
    return float(value) if isinstance(value, (int, float)) else None  # None: absent or not a number


def epsilons(account: PrivacyAccount, extra: list[PrivacyEvent] | None = None) -> dict[str, Any]:
    """Cumulative epsilon at the plan's delta under every accountant (``epsilon_rdp``, ...),
    over every event of every run of this state (the ledger's chain holds them all, in order,
    and ``verify`` recomputes the figure from it).

    An accountant that cannot compute it (PRV has a bounded domain) records ``None``
    and, beside it, why (``epsilon_prv_error``).
    """
    history = account.lifetime_history() + (extra or [])
    delta = account.plan.delta
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for accountant in ACCOUNTANTS:
        try:
            out[epsilon_key(accountant)] = epsilon_of(history, delta=delta, accountant=accountant)
        except (ValueError, RuntimeError, OverflowError) as exc:
            out[epsilon_key(accountant)] = None
            errors[f"{epsilon_key(accountant)}_error"] = f"{type(exc).__name__}: {exc}"
    out.update(errors)
    return out


def release_record(
    account: PrivacyAccount,
    *,
    run: str,
    server_round: int,
    merchant: str,
    release: str,
    event: PrivacyEvent,
    budget: float,
    released: list[str],
    kept_local: list[str],
    secagg: bool,
    model: str,
    lifetime_budget: float | None = None,
) -> dict[str, Any]:
    """The body of a ``reserve`` entry: ``event`` is already in ``account``'s history.

    ``lifetime_budget`` is the merchant's ``epsilon-max`` over every run (its policy), if set.
    """
    plan = account.plan
    eps = epsilons(account)
    lifetime = eps[epsilon_key(plan.accountant)]  # every run composed, as enforced
    run_epsilon = account.epsilon() if account.past else lifetime
    counts = release in COUNT_EVENTS
    gram = release == EVENT_ITEM_GRAM
    sampling = COUNT_SAMPLING if counts else GRAM_SAMPLING if gram else None
    return {
        "run": run,
        "round": server_round,
        "merchant": merchant,
        "release": release,
        "dp": True,
        "unit": plan.unit,
        "unit_description": UNIT_DESCRIPTIONS.get(plan.unit, plan.unit),
        "adjacency": ADJACENCY.get(plan.unit, plan.unit),
        "sampling": sampling or sampling_description(plan.unit),
        "noise_multiplier": event.noise_multiplier,
        # the L2 bound on one unit's contribution: 1 for released statistics, C for DP-SGD
        "max_grad_norm": 1.0 if sampling else plan.max_grad_norm,
        "sample_rate": event.sample_rate,
        "steps": event.steps,
        "steps_total": account.steps,
        "delta": plan.delta,
        **eps,
        "accountant": plan.accountant,
        "run_epsilon": run_epsilon,  # this run's events alone (the fields above: every run's)
        "runs_composed": len(account.past) + 1,
        "epsilon_max": finite(budget),  # the run's budget, checked on run_epsilon
        "epsilon_remaining": finite(budget - run_epsilon) if run_epsilon is not None else None,
        # the lifetime budget, checked on the enforcing accountant's epsilon above
        "lifetime_epsilon_max": None if lifetime_budget is None else finite(lifetime_budget),
        "lifetime_epsilon_remaining": None
        if lifetime_budget is None or lifetime is None
        else finite(lifetime_budget - lifetime),
        "target_epsilon": plan.target_epsilon,
        "planned_rounds": plan.planned_rounds,
        "population": plan.population,
        "model": model,  # the registered kind whose parameters a training release carries
        "released": sorted(released),
        "kept_local": sorted(kept_local),
        "secagg": secagg,
        "guarantee": JOINT_DP if plan.unit == "user" else "",
        "versions": library_versions(),
    }
