"""Check a ``report.json`` against the ledgers it was built from.

``fedrec audit report`` writes into ``report.json`` the heads (seq and hash
per party) of the verified chains it rendered, and a SHA-256 digest of its
content. :func:`verify_report` checks the digest (an edit that forgot it),
verifies the ledgers, cuts each chain at the report's head (a report of an
earlier head still verifies after the ledger grows) and re-renders every
figure and statement; the first one that differs is named. The ledger is the
one beside the report (a report written into its run directory), else the one
the report names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.constants import FEDERATION_LEDGER_FILE, MERCHANT_LEDGER_FILE, RUN_LEDGER_DIR
from common.privacy.ledger import Problem, read_ledger
from common.privacy.verify import Verdict, verify_path
from simulations.audit_client_level import client_level
from simulations.audit_report import (
    COORDINATOR,
    coordinator_entries,
    ledger_file,
    rendered_merchants,
    report_digest,
    summarize,
    verified_chains,
)


def _first_difference(said: Any, fresh: Any, where: str = "merchants") -> str | None:
    if isinstance(said, dict) and isinstance(fresh, dict):
        for key in sorted(set(said) | set(fresh), key=str):
            if key not in said or key not in fresh:
                return f"{where}.{key} is {'missing' if key not in said else 'not in the ledgers'}"
            found = _first_difference(said[key], fresh[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(said, list) and isinstance(fresh, list):
        if len(said) != len(fresh):
            return f"{where} lists {len(said)} item(s), the ledgers give {len(fresh)}"
        for index, (a, b) in enumerate(zip(said, fresh, strict=True)):
            found = _first_difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None
    if said != fresh:
        return f"{where} says {said!r}, the ledgers give {fresh!r}"
    return None


def _report_ledger(report_path: Path, report: dict[str, Any]) -> Path:
    """The ledger beside the report (written into a run directory), else the one it names."""
    here = report_path.parent
    if (here / RUN_LEDGER_DIR / FEDERATION_LEDGER_FILE).is_file() or (
        here / MERCHANT_LEDGER_FILE
    ).is_file():
        return here
    return Path(str(report.get("ledger", "")))


def verify_report(report_path: Path) -> Verdict:
    """Check ``report.json`` against its ledgers: digest, heads, and every figure re-rendered."""
    verdict = Verdict(path=report_path)
    source = str(report_path)

    def fail(message: str) -> Verdict:
        verdict.problems.append(Problem("report", message, source=source))
        return verdict

    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        heads = {str(k): (int(v["seq"]), str(v["hash"])) for k, v in report["heads"].items()}
        said = report["merchants"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        return fail(f"not a readable audit report with ledger heads ({exc})")
    if report.get("digest") != report_digest(report):
        return fail("edited after it was written: its digest does not match its content")
    ledger = _report_ledger(report_path, report)
    if not ledger.exists():
        return fail(f"the ledger it was built from, {ledger}, is not there")
    checked = verify_path(ledger)
    verdict.parties, verdict.notes = checked.parties, checked.notes
    if not checked.ok:
        verdict.problems += checked.problems
        return verdict
    chains, fresh_heads = verified_chains(ledger)
    if set(heads) != set(fresh_heads):
        return fail(
            f"built from the heads of {', '.join(sorted(heads))}, but the ledgers hold "
            f"{', '.join(sorted(fresh_heads))}: a party was left out or added; re-run "
            "`fedrec audit report`"
        )
    for party, (seq, digest) in sorted(heads.items()):
        chain = read_ledger(ledger_file(ledger)).entries if party == COORDINATOR else chains[party]
        if not 0 <= seq < len(chain) or chain[seq].hash != digest:
            return fail(
                f"built from {party}'s entry seq {seq} hash {digest}, which the ledgers do not "
                "hold: the report, or the ledger, was replaced"
            )
        if party != COORDINATOR:
            chains[party] = chain[: seq + 1]
    difference = _first_difference(said, rendered_merchants(summarize(chains)))
    if difference:
        return fail(f"differs from the verified ledgers: {difference}")
    coordinator = coordinator_entries(ledger)
    if COORDINATOR in heads:
        coordinator = coordinator[: heads[COORDINATOR][0] + 1]
    fresh = json.loads(json.dumps(client_level(coordinator)))
    difference = _first_difference(report.get("client_level"), fresh, "client_level")
    if difference:
        return fail(f"differs from the verified ledgers: {difference}")
    return verdict
