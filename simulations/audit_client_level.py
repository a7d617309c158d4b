"""The audit report's client-level section: the coordinator's noised aggregates, in words.

Under ``privacy-unit=client`` the guarantee is made at the coordinator, not
by merchants: it clips every client's update and noises their mean, and each
such release is in its ledger (``client-dp-release``, verified and
recomputed by ``fedrec audit verify``). :func:`client_level` summarises them
for ``report.json`` and the privacy officer's statement.
"""

from __future__ import annotations

from typing import Any

from common.privacy.ledger import CLIENT_DP_RELEASE, Entry


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def client_level(entries: list[Entry]) -> dict[str, Any] | None:
    """The coordinator's client-level releases in ``entries`` (its ledger), or ``None``."""
    releases = [
        dict(e.body) | {"seq": e.seq, "at": e.at} for e in entries if e.kind == CLIENT_DP_RELEASE
    ]
    if not releases:
        return None
    return {"releases": releases, "statement": client_statement(releases)}


def client_statement(releases: list[dict[str, Any]]) -> str:
    last = releases[-1]
    unpublished = [str(r["round"]) for r in releases if not r.get("published")]
    parts = [
        f"Client-level differential privacy was applied by the coordinator in run {last['run']}: "
        f"it computed {len(releases)} noised aggregate(s) (rounds "
        f"{', '.join(str(r['round']) for r in releases)}).",
        f"In total they spend epsilon = {_fmt(last['epsilon'])} at delta = "
        f"{_fmt(last['delta'])}, by {last['accountant']}.",
        f"Unit of privacy: {last['unit']}. Neighbouring datasets: {last['adjacency']}.",
        f"Sampling: {last['sampling']}; {last['sample_size']} of {last['population_size']} "
        f"clients per round. Each client's update was clipped to L2 norm C = "
        f"{_fmt(last['clipping_norm'])} and Gaussian noise with multiplier sigma = "
        f"{_fmt(last['noise_multiplier'])} (standard deviation sigma x C / clients) was added "
        "to their mean.",
    ]
    if unpublished:
        parts.append(
            f"The aggregate(s) of round(s) {', '.join(unpublished)} were rejected and not "
            "published; their epsilon is counted all the same."
        )
    parts.append(
        "The coordinator saw each client's update before clipping; the guarantee covers what "
        "it released (the global model), not what it received."
    )
    return " ".join(parts)
