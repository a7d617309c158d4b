"""What a merchant's ledger says, in a privacy officer's words.

:class:`MerchantSummary` holds one merchant's verified entries by kind;
:func:`statement` turns them into the paragraph ``fedrec audit report`` prints:
every field behind the epsilon (unit, adjacency, sampling, clipping, noise,
accountant, what was released and what was sent in clear), and what joint DP
promises and does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.privacy.accountant import COUNT_EVENTS, EVENT_COUNTS_TOP_UP
from common.privacy.config import sampling_description
from common.privacy.records import enforced_epsilon

JOINT_DP_PROMISE = (
    "What joint differential privacy promises: whatever this merchant released (shared "
    "parameters and item counts) changes in distribution by at most the stated (epsilon, delta) "
    "when any one unit of privacy is added or removed; each user's recommendations come from "
    "their own local parameters, which depend only on their own data and on those released "
    "values. What it does not promise: it does not hide a user's data from the merchant that "
    "holds it, does not cover the values listed as sent in clear, does not bound what several "
    "federations learn together (this merchant's runs are composed in its lifetime epsilon; "
    "separate merchant states' epsilons add up), and holds only if the "
    "merchant's software ran as recorded here."
)


@dataclass
class MerchantSummary:
    name: str
    releases: list[dict[str, Any]] = field(default_factory=list)  # committed DP releases
    refusals: list[dict[str, Any]] = field(default_factory=list)  # rounds refused (budget)
    refused_runs: list[dict[str, Any]] = field(default_factory=list)  # runs refused unexecuted
    aborted: list[dict[str, Any]] = field(default_factory=list)
    non_dp: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latest(self) -> dict[str, Any] | None:
        return self.releases[-1] if self.releases else None

    @property
    def latest_run(self) -> list[dict[str, Any]]:
        """The releases of the run the latest release belongs to."""
        latest = self.latest
        if latest is None:
            return []
        return [r for r in self.releases if r.get("run") == latest.get("run")]


def run_epsilon(release: dict[str, Any]) -> float | None:
    """The epsilon of a release's own run (a ledger from before runs composed: its one run)."""
    value = release.get("run_epsilon", enforced_epsilon(release))
    return float(value) if isinstance(value, (int, float)) else None


def lifetime_cell(latest: dict[str, Any]) -> str:
    """The lifetime epsilon (enforcing accountant) over the runs composed, of its budget."""
    if not latest:
        return "-"
    budget = latest.get("lifetime_epsilon_max")
    spent = enforced_epsilon(latest)
    text = f"{fmt(spent)} ({latest.get('runs_composed', 1)} run(s)"
    return text + (f" of {fmt(budget)})" if budget is not None else ")")


def runs_of(summary: MerchantSummary) -> list[dict[str, Any]]:
    """One row per run of this merchant's state, in the order the ledger met them.

    A run's ``run_epsilon`` is its own releases composed; ``lifetime_epsilon`` every
    release of every run up to its last (both by the enforcing accountant), beside the
    merchant's lifetime budget and what it left. A run with no release says why.
    """
    rows: dict[str, dict[str, Any]] = {}

    def row(record: dict[str, Any]) -> dict[str, Any]:
        name = str(record.get("run") or "unnamed")
        return rows.setdefault(
            name, {"run": name, "releases": 0, "started": record.get("at"), "refused": []}
        )

    for release in summary.releases:
        lifetime = enforced_epsilon(release)
        run = row(release)
        run["releases"] += 1
        run.update(
            ended=release.get("at"),
            run_epsilon=run_epsilon(release),
            lifetime_epsilon=lifetime,
            runs_composed=release.get("runs_composed", 1),
            delta=release.get("delta"),
            accountant=release.get("accountant"),
            epsilon_max=release.get("epsilon_max"),
            lifetime_epsilon_max=release.get("lifetime_epsilon_max"),
            lifetime_epsilon_remaining=release.get("lifetime_epsilon_remaining"),
        )
    for refusal in summary.refusals + summary.refused_runs:
        row(refusal)["refused"].append(
            f"{'run' if refusal.get('release') == 'run' else 'round ' + str(refusal.get('round'))}"
            f": {refusal.get('reason', 'no reason recorded')}"
        )
    return list(rows.values())


def lifetime_sentence(summary: MerchantSummary) -> list[str]:
    """Over several runs: the lifetime epsilon, what it composes and the budget left."""
    runs = [r for r in runs_of(summary) if r["releases"]]
    latest = summary.latest
    if latest is None or len(runs) < 2:
        return []
    budget = latest.get("lifetime_epsilon_max")
    return [
        f"Over its lifetime ({len(runs)} runs with releases: "
        f"{', '.join(r['run'] for r in runs)}) the account composes every release of every run "
        f"for its whole population, a user who joined later being charged from the first run: "
        f"epsilon = {fmt(enforced_epsilon(latest))} "
        f"({str(latest.get('accountant')).upper()}) at delta = {fmt(latest.get('delta'))}; per "
        "run: "
        + ", ".join(f"{r['run']} {fmt(r['run_epsilon'])}" for r in runs)
        + "."
        + (
            f" Its lifetime budget epsilon-max = {fmt(budget)} leaves "
            f"{fmt(latest.get('lifetime_epsilon_remaining'))}."
            if budget is not None
            else ""
        )
    ]


def _refused_runs_sentence(summary: MerchantSummary) -> list[str]:
    if not summary.refused_runs:
        return []
    listed = "; ".join(
        f"{r.get('run') or 'unnamed'} (Flower run {r.get('flower_run')}): {r.get('reason')}"
        for r in summary.refused_runs
    )
    return [
        f"It refused {len(summary.refused_runs)} run(s) before executing anything of them: "
        f"{listed}."
    ]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def statement(summary: MerchantSummary, *, promise: bool = True) -> str:
    """A privacy officer's paragraph: every field behind the number, in words.

    ``promise=False`` leaves out :data:`JOINT_DP_PROMISE` (a page that states it once).
    """
    latest = summary.latest
    if latest is None:
        return " ".join(
            [f"{summary.name} made no differentially private release.", _non_dp_sentence(summary)]
            + _refused_runs_sentence(summary)
        )
    training = ("dp-sgd", "item-gram")
    current = summary.latest_run
    dp_rounds = sorted({r["round"] for r in current if r["release"] in training})
    counts = [r for r in current if r["release"] in COUNT_EVENTS]
    versions = latest.get("versions", {})
    several = len({r.get("run") for r in summary.releases}) > 1
    parts = [
        f"{summary.name} made {len(current)} differentially private release(s) in run "
        f"{latest.get('run')}: {len(counts)} release(s) of noisy item counts, and model updates "
        f"in rounds {', '.join(map(str, dp_rounds)) or 'none'}.",
        (
            f"That run spent epsilon = {fmt(latest.get('run_epsilon'))} of its budget "
            f"epsilon-max = {fmt(latest.get('epsilon_max'))}, leaving "
            f"{fmt(latest.get('epsilon_remaining'))} ({str(latest.get('accountant')).upper()}, "
            f"delta = {fmt(latest.get('delta'))})."
            if several
            else f"In total it spent epsilon = {fmt(latest.get('epsilon_rdp'))} by the RDP "
            f"accountant (PRV: {fmt(latest.get('epsilon_prv'))}) at delta = "
            f"{fmt(latest.get('delta'))}; the {str(latest.get('accountant')).upper()} accountant "
            f"enforced its budget epsilon-max = {fmt(latest.get('epsilon_max'))}, leaving "
            f"{fmt(latest.get('epsilon_remaining'))}."
        ),
        *lifetime_sentence(summary),
        f"Unit of privacy: {latest.get('unit_description') or latest.get('unit')}. Neighbouring "
        f"datasets: {latest.get('adjacency')}.",
        f"Sampling: {sampling_description(str(latest.get('unit')), latest.get('sampling'))}. "
        + (
            "Its last release topped up its noisy item counts (the federation trained no model: "
            "too few items cleared the count threshold): every unit's counts were scaled to L2 "
            f"norm at most {fmt(latest.get('max_grad_norm'))} and each item's count received "
            f"Gaussian noise with multiplier sigma = {fmt(latest.get('noise_multiplier'))} "
            f"(sensitivity 1, q = {fmt(latest.get('sample_rate'))}); the coordinator averaged "
            "it with the first count release by inverse variance."
            if latest.get("release") == EVENT_COUNTS_TOP_UP
            else "The model was learnt from one release of the trained items' co-occurrence: every "
            "unit's vector over those items had L2 norm at most "
            f"{fmt(latest.get('max_grad_norm'))}, and each entry of the released upper "
            "triangle of the Gram matrix received Gaussian noise with multiplier sigma = "
            f"{fmt(latest.get('noise_multiplier'))} (sensitivity 1, q = "
            f"{fmt(latest.get('sample_rate'))})."
            if latest.get("release") == "item-gram"
            else "Each update step clipped every unit's contribution "
            f"to L2 norm C = {fmt(latest.get('max_grad_norm'))} and added Gaussian noise with "
            f"multiplier sigma = {fmt(latest.get('noise_multiplier'))}, at sampling rate q = "
            f"{fmt(latest.get('sample_rate'))}; {latest.get('steps_total')} steps in total."
        ),
        f"Released: {', '.join(latest.get('released', []))}. Kept local and never sent: "
        f"{', '.join(latest.get('kept_local', []))}.",
        "Secure aggregation was "
        + (
            "on: the coordinator saw only the sum of updates."
            if latest.get("secagg")
            else "off: the coordinator saw each (noised) update individually."
        ),
        f"Computed by Opacus {versions.get('opacus')} with torch {versions.get('torch')}, "
        f"Flower {versions.get('flwr')}, fedrec {versions.get('fedrec')}.",
    ]
    if summary.refusals:
        reasons: dict[str, list[str]] = {}  # the recorded reason -> rounds (budget, account, ...)
        for r in summary.refusals:
            reasons.setdefault(str(r.get("reason", "no reason recorded")), []).append(
                str(r["round"])
            )
        parts.append(
            "It refused "
            + "; ".join(f"round(s) {', '.join(rounds)} ({why})" for why, rounds in reasons.items())
            + "; nothing was released for them."
        )
    parts += _refused_runs_sentence(summary)
    if summary.aborted:
        parts.append(
            "Round(s) "
            + ", ".join(str(r["round"]) for r in summary.aborted)
            + " were reserved but never completed (stopped or failed); their epsilon is counted."
        )
    parts.append(_non_dp_sentence(summary))
    if promise:
        parts.append(JOINT_DP_PROMISE)
    return " ".join(parts)


def _non_dp_sentence(summary: MerchantSummary) -> str:
    names = sorted({n for release in summary.non_dp for n in release["names"]})
    clear = ", ".join(names) if names else "nothing else"
    return (
        f"Sent in clear, NOT differentially private: {clear}; also the number of its users "
        "(it sets q) and the fact of taking part."
    )
