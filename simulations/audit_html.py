"""``report.html``: the privacy officer's page, readable on a 1280 px screen.

Top to bottom: the verification verdict; a summary table, one row per
merchant (epsilon spent in its latest run, delta, that run's budget, the
lifetime epsilon over every run, unit, accountant, status, refusals) and one
for the coordinator's client-level releases; what joint DP promises, said
once; the plots; then per merchant its privacy statement, its runs (each
run's epsilon, the lifetime epsilon after it, the lifetime budget left, any
refusal) and a release table whose narrow columns carry what changes from
round to round, every other recorded field folded in a ``<details>`` per
release.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from common.privacy.records import enforced_epsilon
from common.privacy.verify import Verdict
from simulations.audit_statement import (
    JOINT_DP_PROMISE,
    MerchantSummary,
    fmt,
    lifetime_cell,
    run_epsilon,
    runs_of,
    statement,
)

SUMMARY_HEADERS = (
    "merchant",
    "ε spent",
    "δ",
    "budget",
    "lifetime ε",
    "unit",
    "accountant",
    "status",
    "refusals",
)
# The release table's columns: what changes from release to release (header, ledger field;
# the field's name is the header's tooltip).
RELEASE_COLUMNS = (
    ("round", "round"),
    ("release", "release"),
    ("ε spent", "epsilon_spent"),
    ("ε left", "epsilon_remaining"),
    ("σ", "noise_multiplier"),
    ("C", "max_grad_norm"),
    ("q", "sample_rate"),
    ("steps", "steps"),
)
_TIPS = {"epsilon_spent": "epsilon_rdp or epsilon_prv, by the accountant that enforced the budget"}
# Folded per release: every other recorded field, by its ledger name.
DETAIL_FIELDS = (
    "epsilon_rdp",
    "epsilon_prv",
    "delta",
    "epsilon_max",
    "steps_total",
    "unit",
    "adjacency",
    "sampling",
    "accountant",
    "secagg",
    "update_sha256",
)
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1180px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.n{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
.statement{background:#f5f5f5;padding:8px;line-height:1.4}
details dl{display:grid;grid-template-columns:max-content minmax(0,40em);gap:2px 10px;margin:4px 0}
details dt{font-weight:bold} details dd{margin:0;overflow-wrap:anywhere}
img{max-width:100%;height:auto;display:block;margin:0.5em 0}
.bad{color:#a00;font-weight:bold}
"""


def merchant_status(summary: MerchantSummary) -> str:
    """In a few words: no release, within budget, or stopped at its budget (a round refused for
    it; other refusals, e.g. of an unsigned run, are in the refusals column and the statement)."""
    latest = summary.latest
    if latest is None:
        return "no DP release"
    remaining = latest.get("epsilon_remaining")
    if isinstance(remaining, (int, float)) and remaining < 0:
        return "OVER BUDGET"
    at_budget = any("epsilon_max" in r for r in summary.refusals)  # a budget refusal's record
    words = "stopped at its budget" if at_budget else "within budget"
    if summary.aborted:
        words += f"; {len(summary.aborted)} round(s) aborted (counted)"
    return words


def refusal_cell(summary: MerchantSummary) -> str:
    """How many rounds (and runs) were refused, and which."""
    parts = []
    if summary.refusals:
        rounds = ", ".join(str(r["round"]) for r in summary.refusals)
        parts.append(f"{len(summary.refusals)} (round {rounds})")
    if summary.refused_runs:
        parts.append(f"{len(summary.refused_runs)} run(s) refused unexecuted")
    return "; ".join(parts) or "0"


def summary_rows(
    summaries: dict[str, MerchantSummary], coordinator: dict[str, Any] | None
) -> list[tuple[str, ...]]:
    """One row per merchant (and the coordinator's client-level releases), as SUMMARY_HEADERS."""
    rows: list[tuple[str, ...]] = []
    for name, summary in summaries.items():
        latest = summary.latest or {}
        rows.append(
            (
                name,
                fmt(run_epsilon(latest)) if latest else "-",
                fmt(latest.get("delta")),
                fmt(latest.get("epsilon_max")),
                lifetime_cell(latest),
                fmt(latest.get("unit")),
                str(latest.get("accountant", "-")).upper(),
                merchant_status(summary),
                refusal_cell(summary),
            )
        )
    if coordinator is not None:
        releases = coordinator["releases"]
        last = releases[-1]
        rejected = sum(1 for r in releases if not r.get("published"))
        rows.append(
            (
                "coordinator (client-level)",
                fmt(last.get("epsilon")),
                fmt(last.get("delta")),
                "-",
                "-",
                fmt(last.get("unit")),
                str(last.get("accountant")),
                f"{len(releases)} aggregate(s), {rejected} rejected",
                "-",
            )
        )
    return rows


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]], table_id: str) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table id='{table_id}'><tr>{head}</tr>{body}</table>"


def _release_row(release: dict[str, Any]) -> str:
    esc = html.escape
    values = release | {"epsilon_spent": enforced_epsilon(release)}
    cells = "".join(
        f"<td{'' if key == 'release' else ' class=n'}>{esc(fmt(values.get(key)))}</td>"
        for _, key in RELEASE_COLUMNS
    )
    folded = "".join(
        f"<dt>{esc(key)}</dt><dd>{esc(fmt(release.get(key)))}</dd>" for key in DETAIL_FIELDS
    )
    folded = f"<details><summary>all fields</summary><dl>{folded}</dl></details>"
    return f"<tr>{cells}<td>{folded}</td></tr>"


RUN_HEADERS = (
    "run",
    "releases",
    "first release",
    "last release",
    "ε of the run",
    "lifetime ε after it",
    "lifetime budget left",
    "refused",
)


def run_rows(summary: MerchantSummary) -> list[tuple[str, ...]]:
    """One row per run of the merchant's state, as RUN_HEADERS."""
    return [
        (
            run["run"],
            str(run["releases"]),
            str(run.get("started") or "-")[:19],
            str(run.get("ended") or "-")[:19],
            fmt(run.get("run_epsilon")),
            fmt(run.get("lifetime_epsilon")),
            fmt(run.get("lifetime_epsilon_remaining")),
            "; ".join(run["refused"]) or "-",
        )
        for run in runs_of(summary)
    ]


def _merchant_section(summary: MerchantSummary) -> str:
    esc = html.escape
    latest = summary.latest or {}
    versions = ", ".join(f"{k} {v}" for k, v in latest.get("versions", {}).items())
    head = "".join(
        f"<th title='{esc(_TIPS.get(key, key))}'>{esc(label)}</th>"
        for label, key in RELEASE_COLUMNS
    )
    head += "<th>recorded</th>"
    rows = "".join(_release_row(r) for r in summary.releases)
    clear = "".join(
        f"<li>round {esc(str(r['round']))}: {esc(str(r['release']))}: "
        f"{esc(', '.join(r['names']))}</li>"
        for r in summary.non_dp
    )
    refused = ", ".join(str(r["round"]) for r in summary.refusals) or "none"
    aborted = ", ".join(str(r["round"]) for r in summary.aborted) or "none"
    accountant = str(latest.get("accountant", "rdp")).upper()
    return (
        f"<h2 id='m-{esc(summary.name)}'>{esc(summary.name)}</h2>"
        f"<p class='statement'>{esc(statement(summary, promise=False))}</p>"
        f"<p>Runs of this merchant's state (lifetime ε composes every release of every run, "
        f"by {esc(accountant)}):</p>"
        f"<div class='scroll'>{_table(RUN_HEADERS, run_rows(summary), 'runs-' + summary.name)}"
        "</div>"
        f"<p>Releases (ε by the enforcing accountant, {esc(accountant)}; the other fields of "
        "each release under <i>all fields</i>):</p>"
        f"<div class='scroll'><table class='releases'><tr>{head}</tr>{rows}</table></div>"
        f"<p><b>released</b>: {esc(', '.join(latest.get('released', [])))}; "
        f"<b>kept_local</b>: {esc(', '.join(latest.get('kept_local', [])))}; "
        f"<b>versions</b>: {esc(versions)}</p>"
        f"<p><b>refused rounds</b>: {esc(refused)}; <b>aborted rounds</b>: {esc(aborted)}</p>"
        f"<p><b>non-DP releases (sent in clear)</b>:</p><ul>{clear or '<li>none</li>'}</ul>"
    )


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def render_html(
    verdict: Verdict,
    summaries: dict[str, MerchantSummary],
    plots: dict[str, Path],
    coordinator: dict[str, Any] | None = None,
) -> str:
    """The whole page; ``plots`` are embedded, so it can be mailed or archived alone."""
    esc = html.escape
    status = "VERIFIED" if verdict.ok else "<span class='bad'>FAILED</span>"
    problems = "".join(f"<li>{esc(p.render())}</li>" for p in verdict.problems[:20])
    notes = "".join(f"<li>{esc(n)}</li>" for n in verdict.notes)
    sections = []
    if coordinator is not None:
        sections.append(
            "<h2>coordinator (client-level DP)</h2>"
            f"<p class='statement'>{esc(coordinator['statement'])}</p>"
        )
    sections += [_merchant_section(s) for s in summaries.values()]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>fedrec privacy audit</title><style>{STYLE}</style></head><body>"
        f"<h1>Privacy audit</h1><p>Ledger: <code>{esc(str(verdict.path))}</code></p>"
        f"<p id='verdict'>Ledger verification: <b>{status}</b></p>"
        + _table(SUMMARY_HEADERS, summary_rows(summaries, coordinator), "summary")
        + "<p>ε spent is by the accountant that enforced the budget; budget = spent + left.</p>"
        + (f"<ul>{problems}{notes}</ul>" if problems or notes else "")
        + f"<p class='statement'>{esc(JOINT_DP_PROMISE)}</p>"
        + _img(plots["epsilon"])
        + _img(plots["budget"])
        + _img(plots["lifetime"])
        + "".join(sections)
        + "</body></html>"
    )
