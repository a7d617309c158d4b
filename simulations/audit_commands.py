"""``fedrec audit verify|report|empirical|epsilon``: the work behind :mod:`simulations.audit_cli`.

Verifying and reporting need no torch; ``empirical`` runs a simulation and
imports it itself.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common.errors import ConfigError, ExitCode
from common.privacy.accounting import PrivacyEvent, calibrate_noise, epsilon_of
from common.privacy.config import ACCOUNTANTS
from common.privacy.verify import verify_path
from simulations.audit_report import REPORT_FILE, write_report
from simulations.audit_report_check import verify_report

VERIFY_TAMPERED = ExitCode.FAILED


def verify_command(args: argparse.Namespace) -> int:
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


def report_command(args: argparse.Namespace) -> int:
    write_report(args.ledger, args.out, console=Console(highlight=False))  # refuses if unverified
    return ExitCode.OK


def empirical_command(args: argparse.Namespace) -> int:
    # torch and a whole simulation: imported by this command only
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


def epsilon_command(args: argparse.Namespace) -> int:
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
