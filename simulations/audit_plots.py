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
