"""``fedrec audit report``: what each merchant released, at what privacy cost, in plain words.

Reads a verified ledger (run directory, federation ledger or merchant ledger)
and writes three views of the same facts: a terminal summary, ``report.json``
and ``report.html`` (:mod:`simulations.audit_html`: a summary table first) with
two plots (``epsilon.png``: cumulative epsilon over rounds per merchant;
``budget.png``: remaining budget), plus one privacy statement per merchant that
names every assumption behind its epsilon.

Figures come only from verified chains: a ledger that fails ``verify`` is
refused (:class:`UnverifiedLedger`, naming the first problem) before anything
is written. In a run directory the coordinator's copies of each merchant's
entries are authoritative; a merchant's own file may only extend them (entries
the coordinator never received, e.g. a reservation left open by a crash, are
included: they can only add epsilon). ``report.json`` carries the ledger heads
(seq and hash per party) it was built from and a digest of its content;
:mod:`simulations.audit_report_check` re-renders the figures from the ledgers
cut at those heads and names the first figure that differs, so an edited
report fails ``fedrec audit verify``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.constants import (
    FEDERATION_LEDGER_FILE,
    MERCHANT_LEDGER_FILE,
    MERCHANTS_DIR,
    RUN_LEDGER_DIR,
)
from common.errors import ExitCode, FedrecError
from common.privacy.ledger import (
    ABORT,
    COMMIT,
    MERCHANT_ENTRIES,
    NON_DP_RELEASE,
    REFUSAL,
    Entry,
    read_ledger,
)
from common.privacy.verify import Verdict, verify_path
from simulations.audit_client_level import client_level
from simulations.audit_html import RUN_HEADERS, render_html, run_rows
from simulations.audit_plots import plot_figures
from simulations.audit_statement import MerchantSummary, fmt, lifetime_cell, runs_of, statement

REPORT_FILE = "report.json"
REPORT_FORMAT = "fedrec-audit-report/1"
COORDINATOR = "coordinator"


class UnverifiedLedger(FedrecError):
    """The ledger failed verification: no figures are rendered from it."""

    exit_code = ExitCode.FAILED  # as a failed ``fedrec audit verify``


def ledger_file(path: Path) -> Path:
    if path.is_dir():
        federation = path / RUN_LEDGER_DIR / FEDERATION_LEDGER_FILE
        return federation if federation.is_file() else path / MERCHANT_LEDGER_FILE
    return path


def verified_chains(path: Path) -> tuple[dict[str, list[Entry]], dict[str, dict[str, Any]]]:
    """Each merchant's verified chain, and the heads (seq, hash per party) it ends at.

    In a run directory the coordinator's copy is authoritative: a merchant's own
    file must begin with exactly the entries the coordinator recorded (it may
    add newer ones); one that disagrees raises :class:`UnverifiedLedger`.
    """
    read = read_ledger(ledger_file(path))
    if read.entries and read.entries[0].body.get("role") != COORDINATOR:
        party = read.entries[0].party
        return {party: read.entries}, {party: _head(read.entries)}
    chains: dict[str, list[Entry]] = {}
    for entry in read.entries:
        if entry.kind == MERCHANT_ENTRIES:
            name = str(entry.body["merchant"])
            chains.setdefault(name, []).extend(Entry.from_json(e) for e in entry.body["entries"])
    for own in sorted((read.path.parent.parent / MERCHANTS_DIR).glob(f"*/{MERCHANT_LEDGER_FILE}")):
        entries = read_ledger(own).entries
        party = entries[0].party if entries else own.parent.name
        recorded = chains.get(party)
        if recorded is None or [e.hash for e in entries[: len(recorded)]] != [
            e.hash for e in recorded
        ]:
            raise UnverifiedLedger(
                f"{own}: {party}'s own ledger disagrees with the entries the coordinator "
                "recorded; the coordinator's copy is authoritative and no figures are rendered. "
                f"Run `fedrec audit verify {path}`."
            )
        if len(entries) > len(recorded):
            chains[party] = entries
    heads = {name: _head(chain) for name, chain in chains.items() if chain}
    if read.entries:
        heads[COORDINATOR] = _head(read.entries)
    return chains, heads


def coordinator_entries(path: Path) -> list[Entry]:
    """The federation ledger's entries ([] when ``path`` is one merchant's ledger)."""
    read = read_ledger(ledger_file(path))
    if read.entries and read.entries[0].body.get("role") == COORDINATOR:
        return read.entries
    return []


def _head(entries: list[Entry]) -> dict[str, Any]:
    return {"seq": entries[-1].seq, "hash": entries[-1].hash}


def summarize(chains: dict[str, list[Entry]]) -> dict[str, MerchantSummary]:
    out: dict[str, MerchantSummary] = {}
    for name, entries in sorted(chains.items()):
        summary = MerchantSummary(name=name)
        for entry in entries:
            body = dict(entry.body) | {"seq": entry.seq, "at": entry.at}
            if entry.kind == COMMIT:
                summary.releases.append(body)
                if body.get("non_dp_metrics"):
                    summary.non_dp.append(
                        {
                            "round": body["round"],
                            "release": f"beside {body['release']}",
                            "names": sorted(body["non_dp_metrics"]),
                        }
                    )
            elif entry.kind == REFUSAL and body.get("release") == "run":
                summary.refused_runs.append(body)
            elif entry.kind == REFUSAL:
                summary.refusals.append(body)
            elif entry.kind == ABORT:
                summary.aborted.append(body)
            elif entry.kind == NON_DP_RELEASE:
                names = sorted(body.get("non_dp_metrics", {}))
                if body.get("update_sha256"):
                    names = ["model update (unclipped, un-noised)", *names]
                summary.non_dp.append(
                    {"round": body.get("round"), "release": body.get("release"), "names": names}
                )
        out[name] = summary
    return out


def _terminal(verdict: Verdict, summaries: dict[str, MerchantSummary], console: Console) -> None:
    status = (
        "VERIFIED" if verdict.ok else f"FAILED ({verdict.first.render() if verdict.first else ''})"
    )
    console.print(f"Ledger: {verdict.path} - {status}")
    for note in verdict.notes:
        console.print(f"  note: {note}")
    table = Table(title="Privacy spent per merchant (from the signed ledger)")
    for header in (
        "merchant",
        "ε RDP",
        "ε PRV",
        "δ",
        "budget",
        "left",
        "lifetime ε",
        "σ",
        "C",
        "q",
        "steps",
        "unit",
        "refused",
        "aborted",
    ):
        table.add_column(header, no_wrap=header == "merchant")
    for name, summary in summaries.items():
        latest = summary.latest or {}
        table.add_row(
            name,
            fmt(latest.get("epsilon_rdp")),
            fmt(latest.get("epsilon_prv")),
            fmt(latest.get("delta")),
            fmt(latest.get("epsilon_max")),
            fmt(latest.get("epsilon_remaining")),
            lifetime_cell(latest),
            fmt(latest.get("noise_multiplier")),
            fmt(latest.get("max_grad_norm")),
            fmt(latest.get("sample_rate")),
            fmt(latest.get("steps_total")),
            fmt(latest.get("unit")),
            ", ".join(str(r["round"]) for r in summary.refusals) or "-",
            ", ".join(str(r["round"]) for r in summary.aborted) or "-",
        )
    console.print(table)
    if any(len(runs_of(s)) > 1 for s in summaries.values()):
        runs = Table(title="Runs per merchant (lifetime epsilon: every release of every run)")
        for header in ("merchant", *RUN_HEADERS):
            runs.add_column(header, no_wrap=header == "merchant")
        for name, summary in summaries.items():
            for row in run_rows(summary):
                runs.add_row(name, *row)
        console.print(runs)


def report_digest(report: dict[str, Any]) -> str:
    content = {k: v for k, v in report.items() if k != "digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def rendered_merchants(summaries: dict[str, MerchantSummary]) -> dict[str, Any]:
    rendered = {
        name: asdict(s) | {"runs": runs_of(s), "statement": statement(s)}
        for name, s in summaries.items()
    }
    return dict(json.loads(json.dumps(rendered)))  # as report.json holds it


def _refuse(verdict: Verdict) -> UnverifiedLedger:
    first = verdict.first.render() if verdict.first else "unknown"
    return UnverifiedLedger(
        f"{verdict.path}: the ledger FAILED verification ({len(verdict.problems)} problem(s); "
        f"first: {first}); no figures are rendered from it. Run `fedrec audit verify "
        f"{verdict.path}` for every problem."
    )


def write_report(path: Path, out: Path, *, console: Console | None = None) -> dict[str, Any]:
    """Verify, summarise and write ``report.json``, ``report.html`` and the plots to ``out``.

    Raises :class:`UnverifiedLedger`, writing nothing, when the ledger fails verification.
    """
    verdict = verify_path(path)
    if not verdict.ok:
        raise _refuse(verdict)
    chains, heads = verified_chains(path)
    summaries = summarize(chains)
    coordinator = client_level(coordinator_entries(path))
    out.mkdir(parents=True, exist_ok=True)
    plots = plot_figures(summaries, out)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "ledger": str(ledger_file(path).resolve()),
        "verified": True,
        "heads": heads,
        "problems": [],
        "notes": verdict.notes,
        "merchants": rendered_merchants(summaries),
        "client_level": json.loads(json.dumps(coordinator)),
    }
    report["digest"] = report_digest(report)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    page = render_html(verdict, summaries, plots, coordinator)
    (out / "report.html").write_text(page, encoding="utf-8")
    if console is not None:
        _terminal(verdict, summaries, console)
        if coordinator is not None:
            console.print(f"\n[bold]coordinator[/bold]: {coordinator['statement']}")
        for summary in summaries.values():
            console.print(f"\n[bold]{summary.name}[/bold]: {statement(summary)}")
        console.print(f"\nWrote {out / 'report.html'}, {out / REPORT_FILE} and plots.")
    return report
