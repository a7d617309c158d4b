"""The audit report's two figures: epsilon over rounds, and each merchant's budget.

Every epsilon plotted is the one the merchant's *enforcing* accountant computed
(RDP or PRV, as its ledger records), so spent + remaining is its budget.
"""

from __future__ import annotations

from pathlib import Path

from common.privacy.records import enforced_epsilon
from simulations.audit_statement import MerchantSummary


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


def plot_figures(summaries: dict[str, MerchantSummary], out: Path) -> dict[str, Path]:
    """``epsilon.png`` and ``budget.png`` under ``out``."""
    paths = {"epsilon": out / "epsilon.png", "budget": out / "budget.png"}
    _save(epsilon_figure(summaries), paths["epsilon"])
    _save(budget_figure(summaries), paths["budget"])
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
    ax.set_title("Epsilon spent over rounds, per merchant")
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
    ax.set_title("Budget per merchant")
    outside_legend(ax)
    return fig


def outside_legend(ax) -> None:  # type: ignore[no-untyped-def]
    """The legend to the right of the axes, where it cannot cover data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7)


def _save(fig, path: Path) -> None:  # type: ignore[no-untyped-def]
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
