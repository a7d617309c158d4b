"""The audit report's figures: epsilon over the latest run's rounds, each merchant's budget,
and its lifetime epsilon over time (every run composed, one point per release).

Every epsilon plotted is the one the merchant's *enforcing* accountant computed
(RDP or PRV, as its ledger records), so spent + remaining is its budget.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from common.privacy.records import enforced_epsilon
from simulations.audit_statement import MerchantSummary, run_epsilon


def epsilon_series(summaries: dict[str, MerchantSummary]) -> dict[str, list[tuple[int, float]]]:
    """Per merchant, (round, cumulative epsilon of its latest run) by the enforcing accountant.

    A ledger from before runs were composed has no ``run_epsilon``: its one run's
    cumulative epsilon is the enforced one.
    """
    series = {}
    for name, summary in summaries.items():
        points = [(int(r["round"]), run_epsilon(r)) for r in summary.latest_run]
        series[name] = [(rnd, eps) for rnd, eps in points if eps is not None]
    return series


def lifetime_series(
    summaries: dict[str, MerchantSummary],
) -> dict[str, list[tuple[dt.datetime, float, str]]]:
    """Per merchant, (time, lifetime epsilon, run) after each release, every run composed."""
    series = {}
    for name, summary in summaries.items():
        points = []
        for release in summary.releases:
            epsilon = enforced_epsilon(release)
            if epsilon is not None and release.get("at"):
                at = dt.datetime.fromisoformat(str(release["at"]))
                points.append((at, epsilon, str(release.get("run") or "unnamed")))
        series[name] = points
    return series


def budget_bars(summaries: dict[str, MerchantSummary]) -> dict[str, tuple[float, float]]:
    """Per merchant, (spent, remaining) in its latest run by its enforcing accountant: they add
    up to that run's budget (the lifetime figure is :func:`lifetime_series`)."""
    bars = {}
    for name, summary in summaries.items():
        latest = summary.latest or {}
        bars[name] = (run_epsilon(latest) or 0.0, latest.get("epsilon_remaining") or 0.0)
    return bars


def enforcing_accountants(summaries: dict[str, MerchantSummary]) -> str:
    """The accountant(s) behind the plotted epsilons, e.g. ``RDP`` or ``PRV, RDP``."""
    names = {
        str(r.get("accountant", "rdp")).upper() for s in summaries.values() for r in s.releases
    }
    return ", ".join(sorted(names)) or "RDP"


def plot_figures(summaries: dict[str, MerchantSummary], out: Path) -> dict[str, Path]:
    """``epsilon.png``, ``budget.png`` and ``lifetime.png`` under ``out``."""
    paths = {
        "epsilon": out / "epsilon.png",
        "budget": out / "budget.png",
        "lifetime": out / "lifetime.png",
    }
    _save(epsilon_figure(summaries), paths["epsilon"])
    _save(budget_figure(summaries), paths["budget"])
    _save(lifetime_figure(summaries), paths["lifetime"])
    return paths


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def epsilon_figure(summaries: dict[str, MerchantSummary]):  # type: ignore[no-untyped-def]
    """Cumulative epsilon per round: whole-number rounds, epsilon from 0, legend beside."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _pyplot().subplots(figsize=(7.5, 4))
    series = epsilon_series(summaries)
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), "o-", label=name)
    rounds = [rnd for points in series.values() for rnd, _ in points]
    if rounds and max(rounds) - min(rounds) < 2:  # one or two rounds: whole rounds either side
        ax.set_xlim(min(rounds) - 1, max(rounds) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)  # cumulative epsilon starts at 0: one value is not a 3.8-4.2 axis
    ax.set_xlabel("round (0 = item-count release)")
    ax.set_ylabel(f"cumulative epsilon ({enforcing_accountants(summaries)}, as enforced)")
    ax.set_title("Epsilon spent over the rounds of each merchant's latest run")
    if any(s.releases for s in summaries.values()):
        outside_legend(ax)
    return fig


def budget_figure(summaries: dict[str, MerchantSummary]):  # type: ignore[no-untyped-def]
    """Spent and remaining epsilon per merchant, stacked; the legend beside the bars."""
    bars = budget_bars(summaries)
    names = list(bars)
    fig, ax = _pyplot().subplots(figsize=(7.5, 1.6 + 0.45 * max(len(names), 1)))
    spent = [bars[n][0] for n in names]
    left = [bars[n][1] for n in names]
    ax.barh(names, spent, label="spent")
    ax.barh(names, left, left=spent, label="remaining", alpha=0.5)
    ax.invert_yaxis()  # merchants top to bottom, as in the summary table
    ax.set_xlim(left=0)
    ax.set_xlabel(f"epsilon by {enforcing_accountants(summaries)} (budget = spent + remaining)")
    ax.set_title("Budget per merchant, in its latest run")
    outside_legend(ax)
    return fig


def lifetime_figure(summaries: dict[str, MerchantSummary]):  # type: ignore[no-untyped-def]
    """Lifetime epsilon over time: a step per release, each run's first release labelled,
    a cross where a run was refused before releasing anything, and each merchant's lifetime
    budget (as its last release recorded it) dashed in its colour."""
    import matplotlib.dates as mdates

    fig, ax = _pyplot().subplots(figsize=(7.5, 4))
    for name, points in lifetime_series(summaries).items():
        if not points:
            continue
        times, epsilons, runs = zip(*points, strict=True)
        (line,) = ax.step(times, epsilons, "o-", where="post", label=name)
        for i, run in enumerate(runs):
            if i == 0 or runs[i - 1] != run:
                ax.annotate(
                    run,
                    (times[i], epsilons[i]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for refusal in summaries[name].refusals + summaries[name].refused_runs:
            if refusal.get("at") and refusal.get("run") not in runs:  # a run refused outright
                at = dt.datetime.fromisoformat(str(refusal["at"]))
                ax.plot([at], [epsilons[-1]], "x", color=line.get_color(), markersize=9)
                ax.annotate(
                    f"{refusal.get('run')} refused",
                    (at, epsilons[-1]),
                    fontsize=7,
                    xytext=(3, -10),
                    textcoords="offset points",
                )
        budget = (summaries[name].latest or {}).get("lifetime_epsilon_max")
        if isinstance(budget, (int, float)):
            ax.axhline(budget, color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time of release (UTC)")
    ax.set_ylabel(f"lifetime epsilon ({enforcing_accountants(summaries)}, every run composed)")
    ax.set_title("Lifetime epsilon per merchant (dashed: its lifetime budget)")
    if any(s.releases for s in summaries.values()):
        outside_legend(ax)
    return fig


def outside_legend(ax) -> None:  # type: ignore[no-untyped-def]
    """The legend to the right of the axes, where it cannot cover data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7)


def _save(fig, path: Path) -> None:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
