"""Client-level DP releases in a federation ledger: counted in order, epsilon recomputed.

Under ``privacy-unit=client`` the coordinator records every noised aggregate
(``client-dp-release``): its noise multiplier, sample and population sizes,
the number of releases so far and the cumulative epsilon at delta reported
by Flower's RDP accountant (no sampling amplification, add-or-remove-one
adjacency). Here that accountant is replayed with Google's ``dp-accounting``
RDP accountant (the backend Flower's wraps, at its default orders): the
``n``-th release must say ``releases == n`` and an epsilon equal to the
composition of the ``n`` Gaussian events recorded so far. A resumed run
continues the count; a release missing from the middle, a count reset to
zero, or an understated epsilon is a problem naming its entry.
"""

from __future__ import annotations

from typing import Any

from common.privacy.ledger import CLIENT_DP_RELEASE, Entry, Problem

REL_TOL = 1e-6  # the same deterministic computation; this absorbs float formatting only


def _float(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_client_releases(
    entries: list[Entry], *, source: str, lines: list[int] | None = None
) -> list[Problem]:
    """Problems with the coordinator's ``client-dp-release`` entries, in ledger order."""
    releases = [(i, e) for i, e in enumerate(entries) if e.kind == CLIENT_DP_RELEASE]
    if not releases:
        return []
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    )
    problems: list[Problem] = []
    for count, (index, entry) in enumerate(releases, start=1):
        body = entry.body

        def problem(message: str, *, index: int = index, entry: Entry = entry) -> None:
            line = lines[index] if lines else None
            problems.append(
                Problem("client-epsilon", message, source=source, line=line, seq=entry.seq)
            )

        sigma, delta, epsilon = (_float(body, k) for k in ("noise_multiplier", "delta", "epsilon"))
        if sigma is None or sigma <= 0 or delta is None or epsilon is None:
            problem("the release does not state a positive noise_multiplier, delta and epsilon")
            return problems
        if body.get("releases") != count:
            problem(
                f"this is client-level release {count} of the ledger, but it says "
                f"releases={body.get('releases')!r}: a release was left out or the count reset"
            )
            return problems
        accountant.compose(dp_accounting.GaussianDpEvent(sigma))
        expected = float(accountant.get_epsilon(delta))
        if epsilon < expected * (1 - REL_TOL):
            problem(
                f"epsilon {epsilon:.6g} at delta {delta:g} is below the {expected:.6g} that the "
                f"{count} recorded Gaussian release(s) compose to: understated"
            )
            return problems
        if epsilon > expected * (1 + REL_TOL):
            problem(
                f"epsilon {epsilon:.6g} at delta {delta:g} differs from the {expected:.6g} that "
                f"the {count} recorded Gaussian release(s) compose to"
            )
            return problems
    return problems
