"""``fedrec audit report``: what each merchant released, at what privacy cost, in plain words.

Reads a verified ledger (run directory, federation ledger or merchant ledger)
and writes three views of the same facts: a terminal summary, ``report.json``
and ``report.html`` with two plots (``epsilon.png``: cumulative epsilon over
rounds per merchant; ``budget.png``: remaining budget), plus one privacy
statement per merchant that names every assumption behind its epsilon.

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

import base64
import hashlib
import html
import json
from dataclasses import asdict, dataclass, field
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
from common.privacy.records import enforced_epsilon
from common.privacy.verify import Verdict, verify_path
from simulations.audit_client_level import client_level

REPORT_FILE = "report.json"
REPORT_FORMAT = "fedrec-audit-report/1"
COORDINATOR = "coordinator"


class UnverifiedLedger(FedrecError):
    """The ledger failed verification: no figures are rendered from it."""

    exit_code = ExitCode.FAILED  # as a failed ``fedrec audit verify``


JOINT_DP_PROMISE = (
    "What joint differential privacy promises: whatever this merchant released (shared "
    "parameters and item counts) changes in distribution by at most the stated (epsilon, delta) "
    "when any one unit of privacy is added or removed; each user's recommendations come from "
    "their own local parameters, which depend only on their own data and on those released "
    "values. What it does not promise: it does not hide a user's data from the merchant that "
    "holds it, does not cover the values listed as sent in clear, does not bound what several "
    "federations learn together (epsilons of separate runs add up), and holds only if the "
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


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def statement(summary: MerchantSummary) -> str:
    """A privacy officer's paragraph: every field behind the number, in words."""
    latest = summary.latest
    if latest is None:
        return " ".join(
            [f"{summary.name} made no differentially private release.", _non_dp_sentence(summary)]
            + _refused_runs_sentence(summary)
        )
    dp_rounds = sorted({r["round"] for r in summary.releases if r["release"] == "dp-sgd"})
    counts = [r for r in summary.releases if r["release"] == "item-counts"]
    versions = latest.get("versions", {})
    parts = [
        f"{summary.name} made {len(summary.releases)} differentially private release(s) in run "
        f"{latest.get('run')}: {len(counts)} release(s) of noisy item counts, and model updates "
        f"in rounds {', '.join(map(str, dp_rounds)) or 'none'}.",
        f"In total it spent epsilon = {_fmt(latest.get('epsilon_rdp'))} by the RDP accountant "
        f"(PRV: {_fmt(latest.get('epsilon_prv'))}) at delta = {_fmt(latest.get('delta'))}; the "
        f"{str(latest.get('accountant')).upper()} accountant enforced its budget epsilon-max = "
        f"{_fmt(latest.get('epsilon_max'))}, leaving {_fmt(latest.get('epsilon_remaining'))}.",
        f"Unit of privacy: {latest.get('unit_description') or latest.get('unit')}. Neighbouring "
        f"datasets: {latest.get('adjacency')}.",
        f"Sampling: {latest.get('sampling')}. Each update step clipped every unit's contribution "
        f"to L2 norm C = {_fmt(latest.get('max_grad_norm'))} and added Gaussian noise with "
        f"multiplier sigma = {_fmt(latest.get('noise_multiplier'))}, at sampling rate q = "
        f"{_fmt(latest.get('sample_rate'))}; {latest.get('steps_total')} steps in total.",
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
    parts.append(JOINT_DP_PROMISE)
    return " ".join(parts)


def _non_dp_sentence(summary: MerchantSummary) -> str:
    names = sorted({n for release in summary.non_dp for n in release["names"]})
    clear = ", ".join(names) if names else "nothing else"
    return (
        f"Sent in clear, NOT differentially private: {clear}; also the number of its users "
        "(it sets q) and the fact of taking part."
    )


def epsilon_series(summaries: dict[str, MerchantSummary]) -> dict[str, list[tuple[int, float]]]:
    """Per merchant, (round, cumulative epsilon) by the accountant that enforced its budget."""
    series = {}
    for name, summary in summaries.items():
        points = [(int(r["round"]), enforced_epsilon(r)) for r in summary.releases]
        series[name] = [(rnd, eps) for rnd, eps in points if eps is not None]
    return series


def budget_bars(summaries: dict[str, MerchantSummary]) -> dict[str, tuple[float, float]]:
    """Per merchant, (spent, remaining) by its enforcing accountant: they add up to its budget."""
    bars = {}
    for name, summary in summaries.items():
        latest = summary.latest or {}
        bars[name] = (enforced_epsilon(latest) or 0.0, latest.get("epsilon_remaining") or 0.0)
    return bars


def enforcing_accountants(summaries: dict[str, MerchantSummary]) -> str:
    """The accountant(s) behind the plotted epsilons, e.g. ``RDP`` or ``PRV, RDP``."""
    names = {
        str(r.get("accountant", "rdp")).upper() for s in summaries.values() for r in s.releases
    }
    return ", ".join(sorted(names)) or "RDP"


def _plot(summaries: dict[str, MerchantSummary], out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {"epsilon": out / "epsilon.png", "budget": out / "budget.png"}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, points in epsilon_series(summaries).items():
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (0 = item-count release)")
    ax.set_ylabel(f"cumulative epsilon ({enforcing_accountants(summaries)}, as enforced)")
    ax.set_title("Epsilon spent over rounds, per merchant")
    if any(s.releases for s in summaries.values()):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["epsilon"], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    bars = budget_bars(summaries)
    names = list(bars)
    spent = [bars[n][0] for n in names]
    left = [bars[n][1] for n in names]
    ax.barh(names, spent, label="spent")
    ax.barh(names, left, left=spent, label="remaining", alpha=0.5)
    ax.set_xlabel(f"epsilon by {enforcing_accountants(summaries)} (budget = spent + remaining)")
    ax.set_title("Budget per merchant")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["budget"], dpi=110)
    plt.close(fig)
    return paths


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
            _fmt(latest.get("epsilon_rdp")),
            _fmt(latest.get("epsilon_prv")),
            _fmt(latest.get("delta")),
            _fmt(latest.get("epsilon_max")),
            _fmt(latest.get("epsilon_remaining")),
            _fmt(latest.get("noise_multiplier")),
            _fmt(latest.get("max_grad_norm")),
            _fmt(latest.get("sample_rate")),
            _fmt(latest.get("steps_total")),
            _fmt(latest.get("unit")),
            ", ".join(str(r["round"]) for r in summary.refusals) or "-",
            ", ".join(str(r["round"]) for r in summary.aborted) or "-",
        )
    console.print(table)


def _html(
    verdict: Verdict,
    summaries: dict[str, MerchantSummary],
    plots: dict[str, Path],
    coordinator: dict[str, Any] | None = None,
) -> str:
    def img(path: Path) -> str:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{path.stem}" src="data:image/png;base64,{data}">'

    esc = html.escape
    fields = [
        "round", "release", "epsilon_rdp", "epsilon_prv", "delta", "epsilon_max",
        "epsilon_remaining", "noise_multiplier", "max_grad_norm", "sample_rate", "steps",
        "steps_total", "unit", "adjacency", "sampling", "accountant", "secagg", "update_sha256",
    ]  # fmt: skip
    sections = []
    if coordinator is not None:
        sections.append(
            "<h2>coordinator (client-level DP)</h2>"
            f"<p class='statement'>{esc(coordinator['statement'])}</p>"
        )
    for name, summary in summaries.items():
        rows = "".join(
            "<tr>" + "".join(f"<td>{esc(_fmt(r.get(f)))}</td>" for f in fields) + "</tr>"
            for r in summary.releases
        )
        latest = summary.latest or {}
        versions = ", ".join(f"{k} {v}" for k, v in latest.get("versions", {}).items())
        clear = "".join(
            f"<li>round {esc(str(r['round']))}: {esc(str(r['release']))}: "
            f"{esc(', '.join(r['names']))}</li>"
            for r in summary.non_dp
        )
        sections.append(
            f"<h2>{esc(name)}</h2>"
            f"<p class='statement'>{esc(statement(summary))}</p>"
            f"<table><tr>{''.join(f'<th>{esc(f)}</th>' for f in fields)}</tr>{rows}</table>"
            f"<p><b>released</b>: {esc(', '.join(latest.get('released', [])))}; "
            f"<b>kept_local</b>: {esc(', '.join(latest.get('kept_local', [])))}; "
            f"<b>versions</b>: {esc(versions)}</p>"
            f"<p><b>refused rounds</b>: "
            f"{esc(', '.join(str(r['round']) for r in summary.refusals) or 'none')}; "
            f"<b>aborted rounds</b>: "
            f"{esc(', '.join(str(r['round']) for r in summary.aborted) or 'none')}</p>"
            f"<p><b>non-DP releases (sent in clear)</b>:</p><ul>{clear or '<li>none</li>'}</ul>"
        )
    status = "VERIFIED" if verdict.ok else "FAILED"
    problems = "".join(f"<li>{esc(p.render())}</li>" for p in verdict.problems[:20])
    notes = "".join(f"<li>{esc(n)}</li>" for n in verdict.notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>fedrec privacy audit</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 4px}"
        ".statement{background:#f5f5f5;padding:8px}</style></head><body>"
        f"<h1>Privacy audit of {esc(str(verdict.path))}</h1>"
        f"<p id='verdict'>Ledger verification: <b>{status}</b></p>"
        f"<ul>{problems}{notes}</ul>"
        f"{img(plots['epsilon'])}{img(plots['budget'])}" + "".join(sections) + "</body></html>"
    )


def report_digest(report: dict[str, Any]) -> str:
    content = {k: v for k, v in report.items() if k != "digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def rendered_merchants(summaries: dict[str, MerchantSummary]) -> dict[str, Any]:
    rendered = {name: asdict(s) | {"statement": statement(s)} for name, s in summaries.items()}
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
    plots = _plot(summaries, out)
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
    page = _html(verdict, summaries, plots, coordinator)
    (out / "report.html").write_text(page, encoding="utf-8")
    if console is not None:
        _terminal(verdict, summaries, console)
        if coordinator is not None:
            console.print(f"\n[bold]coordinator[/bold]: {coordinator['statement']}")
        for summary in summaries.values():
            console.print(f"\n[bold]{summary.name}[/bold]: {statement(summary)}")
        console.print(f"\nWrote {out / 'report.html'}, {out / REPORT_FILE} and plots.")
    return report
