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
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common.errors import ExitCode

VERIFY_TAMPERED = ExitCode.FAILED


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
    verify.set_defaults(handler=_verify)

    report = commands.add_parser(
        "report",
        help="summary, JSON and HTML report (with plots) of what each merchant spent",
    )
    report.add_argument("ledger", type=Path, metavar="LEDGER")
    report.add_argument(
        "--out", type=Path, default=Path("audit-report"), help="output folder (audit-report)"
    )
    report.set_defaults(handler=_report)

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
    empirical.set_defaults(handler=_empirical)

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
    epsilon.set_defaults(handler=_epsilon)


def _verify(args: argparse.Namespace) -> int:
    from common.privacy.verify import verify_path
    from simulations.audit_report import REPORT_FILE
    from simulations.audit_report_check import verify_report

    path: Path = args.ledger
    if path.is_file() and path.suffix == ".json":
        verdict = verify_report(path)
    else:
        verdict = verify_path(path)
        if path.is_dir() and (path / REPORT_FILE).is_file():
            verdict.problems += verify_report(path / REPORT_FILE).problems
    if args.json:
        print(
            json.dumps(
                {
                    "path": str(verdict.path),
                    "ok": verdict.ok,
                    "parties": verdict.parties,
                    "problems": [
                        {
                            "kind": p.kind,
                            "file": p.source,
                            "line": p.line,
                            "seq": p.seq,
                            "message": p.message,
                        }
                        for p in verdict.problems
                    ],
                    "notes": verdict.notes,
                },
                indent=2,
            )
        )
        return ExitCode.OK if verdict.ok else VERIFY_TAMPERED
    console = Console(highlight=False)
    parties = ", ".join(f"{name} ({n} entries)" for name, n in verdict.parties.items())
    if verdict.ok:
        console.print(f"[bold green]VERIFIED[/bold green] {verdict.path}: {parties}.")
        console.print(
            "Every entry is in sequence, chained to the one before it and signed by its party's "
            "key; every signed head and countersigned round head matches."
        )
    else:
        first = verdict.problems[0]
        console.print(f"[bold red]FAILED[/bold red] {verdict.path}")
        console.print(f"First bad entry: {first.render()}")
        if len(verdict.problems) > 1:
            console.print(f"{len(verdict.problems) - 1} further problem(s):")
            for problem in verdict.problems[1:11]:
                console.print(f"  {problem.render()}")
    for note in verdict.notes:
        console.print(f"[yellow]note[/yellow]: {note}")
    return ExitCode.OK if verdict.ok else VERIFY_TAMPERED


def _report(args: argparse.Namespace) -> int:
    from simulations.audit_report import write_report

    write_report(args.ledger, args.out, console=Console(highlight=False))  # refuses if unverified
    return ExitCode.OK


def _empirical(args: argparse.Namespace) -> int:
    from simulations.empirical_audit import EmpiricalAuditSpec, run_empirical_audit

    report = run_empirical_audit(
        EmpiricalAuditSpec(
            run_dir=args.out,
            epsilon=args.epsilon,
            delta=args.delta,
            canaries=args.canaries,
            rounds=args.rounds,
            confidence=args.confidence,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    )
    claimed = report["claimed_epsilon"]
    print(
        f"{report['canaries']} canaries ({report['included']} included at random), "
        f"{report['guesses']} guesses from the released model, {report['correct']} correct.\n"
        f"Empirical lower bound: epsilon >= {report['epsilon_lower_bound']:.3f} at "
        f"{report['confidence']:.0%} confidence (delta {report['delta']:g}); claimed: "
        + (f"epsilon = {claimed:.3f} (user-level, RDP)" if claimed is not None else "none (DP off)")
        + f".\nWritten to {args.out / 'empirical_audit.json'}."
    )
    return ExitCode.OK


def _epsilon(args: argparse.Namespace) -> int:
    from common.errors import ConfigError
    from common.privacy.accounting import PrivacyEvent, calibrate_noise, epsilon_of
    from common.privacy.config import ACCOUNTANTS

    if not 0 < args.q <= 1 or args.steps < 1 or not 0 < args.delta < 1:
        raise ConfigError(
            f"Need 0 < q <= 1, steps >= 1 and 0 < delta < 1; got q={args.q}, "
            f"steps={args.steps}, delta={args.delta}."
        )
    table = Table(title=f"{args.steps} steps, Poisson rate q={args.q:g}, delta={args.delta:g}")
    table.add_column("accountant (Opacus)")
    if args.target_epsilon is not None:
        table.add_column(f"sigma for epsilon {args.target_epsilon:g}", justify="right")
        for accountant in ACCOUNTANTS:
            sigma = calibrate_noise(
                target_epsilon=args.target_epsilon,
                delta=args.delta,
                sample_rate=args.q,
                steps=args.steps,
                accountant=accountant,
            )
            table.add_row(accountant.upper(), f"{sigma:.4f}")
    else:
        if args.sigma is None or not args.sigma > 0:
            raise ConfigError("Give --sigma > 0 (or --target-epsilon to solve for sigma).")
        event = PrivacyEvent(noise_multiplier=args.sigma, sample_rate=args.q, steps=args.steps)
        table.add_column(f"epsilon at sigma {args.sigma:g}", justify="right")
        for accountant in ACCOUNTANTS:
            try:
                value = epsilon_of([event], delta=args.delta, accountant=accountant)
                cell = f"{value:.4f}" if math.isfinite(value) else "inf"
            except (ValueError, RuntimeError, OverflowError) as exc:
                cell = f"n/a ({exc})"
            table.add_row(accountant.upper(), cell)
    console = Console(highlight=False)
    console.print(table)
    console.print(
        "RDP is an upper bound (what fedrec enforces by default); PRV is a tighter numerical "
        "estimate with error 0.01 in epsilon. Both assume Poisson sampling, clipping to C and "
        "Gaussian noise sigma*C on every step, empty steps included."
    )
    return ExitCode.OK
