"""``fedrec audit``: what a privacy officer runs.

    fedrec audit verify LEDGER        chain, signatures, signed heads, countersignatures,
                                      identities, epsilon, rollback; or a report.json
    fedrec audit report LEDGER --out DIR   terminal summary, report.json, report.html + plots
                                      (refused, exit 1, when LEDGER fails verification)
    fedrec audit empirical --out DIR [--epsilon E]   canary audit: empirical lower bound
    fedrec audit epsilon --sigma S --q Q --steps T --delta D   planning calculator

LEDGER is a run directory, a federation ledger (``ledger/federation.jsonl``)
or a merchant ledger (``merchants/NAME/ledger.jsonl``). ``verify`` also takes
a ``report.json`` (checked against the ledgers it was built from); a
directory holding a ``report.json`` beside its ledger has both checked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMANDS = "simulations.audit_commands"  # the functions behind these flags


def add_audit(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="verify and read privacy ledgers; plan epsilon")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")

    verify = commands.add_parser(
        "verify",
        help="check a ledger's chain, signatures and signed heads (or a report.json against "
        "its ledgers); name the first bad entry or party",
    )
    verify.add_argument("ledger", type=Path, metavar="LEDGER")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(handler=f"{COMMANDS}:verify_command")

    report = commands.add_parser(
        "report",
        help="summary, JSON and HTML report (with plots) of what each merchant spent",
    )
    report.add_argument("ledger", type=Path, metavar="LEDGER")
    report.add_argument(
        "--out", type=Path, default=Path("audit-report"), help="output folder (audit-report)"
    )
    report.set_defaults(handler=f"{COMMANDS}:report_command")

    empirical = commands.add_parser(
        "empirical",
        help="one-run empirical lower bound on epsilon from canaries (Steinke et al. 2023)",
        description="Simulate a synthetic federation with canary users (each included with "
        "probability 1/2), score membership from the released global model only, and report "
        "the empirical lower bound on epsilon beside the accountant's claim.",
    )
    empirical.add_argument("--out", type=Path, required=True, help="run directory to write")
    empirical.add_argument("--epsilon", type=float, default=0.0, help="target epsilon; 0 = DP off")
    empirical.add_argument("--delta", type=float, default=1e-5)
    empirical.add_argument("--canaries", type=int, default=500)
    empirical.add_argument("--rounds", type=int, default=5)
    empirical.add_argument("--confidence", type=float, default=0.95)
    empirical.add_argument("--seed", type=int, default=0)
    empirical.add_argument("--overwrite", action="store_true")
    empirical.set_defaults(handler=f"{COMMANDS}:empirical_command")

    epsilon = commands.add_parser(
        "epsilon",
        help="epsilon of T steps of the Poisson-sampled Gaussian mechanism, per accountant",
        description="Planning calculator: (sigma, q, steps, delta) -> epsilon under Opacus's RDP "
        "and PRV accountants; with --target-epsilon, the sigma that reaches it instead.",
    )
    epsilon.add_argument("--sigma", type=float, help="noise multiplier (noise std / C)")
    epsilon.add_argument("--q", type=float, required=True, help="Poisson sampling rate, (0, 1]")
    epsilon.add_argument("--steps", type=int, required=True, help="number of steps")
    epsilon.add_argument("--delta", type=float, required=True, help="target delta")
    epsilon.add_argument(
        "--target-epsilon", type=float, help="solve for sigma instead (needs no --sigma)"
    )
    epsilon.set_defaults(handler=f"{COMMANDS}:epsilon_command")
