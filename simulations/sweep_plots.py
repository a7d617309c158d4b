"""Plots of an experiment's tidy tables (matplotlib, Agg backend; PNG files).

* ``privacy_utility.png``: NDCG@K against the target epsilon, mean and 95% CI
  over seeds, one line per combination of the other axes; runs without DP are
  a dashed line at their level, the centralised non-private model dotted. Ticks
  at the epsilons run; one epsilon alone sits mid-axis on 0 to 2 epsilon.
* ``rounds.png``: NDCG@K against the round (whole rounds), mean and 95% CI band per cell.

Intervals are clipped to the metric's range, [0, 1] (a Student-t band over few
seeds can reach below 0); legends sit beside the axes, never over the data.
* ``fairness.png``: each merchant's NDCG@K against its number of users, and
  the spread across merchants per cell.
* ``communication.png``: payload bytes per client per round, up and down, per
  cell; and NDCG@K against the bytes each client sent per round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

MAX_LEGEND = 12
METRIC_RANGE = (0.0, 1.0)  # NDCG@K and HR@K are fractions


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval (0, no bar, for one value)."""
    from simulations.sweep_tables import mean_interval

    _, mean, _, half = mean_interval(values)
    return mean, 0.0 if math.isnan(half) else half


def clipped_errors(
    y: np.ndarray, half: np.ndarray, bounds: tuple[float, float] = METRIC_RANGE
) -> np.ndarray:
    """``yerr`` rows (below, above) of the interval ``y ± half`` clipped to ``bounds``."""
    low = np.maximum(y - half, bounds[0])
    high = np.minimum(y + half, bounds[1])
    return np.vstack([y - low, high - y])


def _group_label(row: pd.Series, axes: Sequence[str]) -> str:
    return ", ".join(f"{a}={row[a]}" for a in axes) or "all runs"


def privacy_utility(runs: pd.DataFrame, axes: Sequence[str], metric: str, path: Path) -> Path:
    return _save(privacy_utility_figure(runs, axes, metric), path)


def privacy_utility_figure(runs: pd.DataFrame, axes: Sequence[str], metric: str):  # type: ignore[no-untyped-def]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    others = [a for a in axes if a != "epsilon"]
    groups = runs.groupby(others, sort=False) if others else [((), runs)]
    finite_eps = runs.loc[np.isfinite(runs["target-epsilon"]), "target-epsilon"]
    for i, (_, group) in enumerate(groups):
        label = _group_label(group.iloc[0], others)
        color = f"C{i % 10}"
        private = group[np.isfinite(group["target-epsilon"])]
        if not private.empty:
            points = [
                (eps, *_ci(g[metric].to_numpy(dtype=float)))
                for eps, g in private.groupby("target-epsilon")
            ]
            x, y, err = (np.array(v) for v in zip(*sorted(points), strict=True))
            yerr = clipped_errors(y, err)
            ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, color=color, label=label)
        plain = group[~np.isfinite(group["target-epsilon"])]
        if not plain.empty:
            level, _ = _ci(plain[metric].to_numpy(dtype=float))
            ax.axhline(level, color=color, linestyle="--", label=f"{label}: no DP")
    reference = f"centralised-{metric}"
    if reference in runs:
        ax.axhline(
            float(runs[reference].mean()), color="grey", linestyle=":", label="centralised, no DP"
        )
    ticks = sorted(set(finite_eps))
    if len(ticks) == 1:  # one epsilon: not a 3.8-4.2 axis of fractional ticks
        ax.set_xlim(0, 2 * ticks[0])
    elif ticks and ticks[-1] / max(ticks[0], 1e-12) > 5:
        ax.set_xscale("log")
        ax.minorticks_off()
    if ticks:
        ax.set_xticks(ticks, [f"{e:g}" for e in ticks])
    delta = runs["delta"].dropna()
    units = sorted(set(runs["privacy-unit"]) - {"off"})
    accountants = sorted(set(runs["accountant"]) - {""})
    caption = (
        f"epsilon: target per merchant at delta {', '.join(f'{d:g}' for d in sorted(set(delta)))}; "
        f"unit {', '.join(units)}; accountant {', '.join(a.upper() for a in accountants)}"
        if units
        else "no run used DP"
    )
    ax.set_xlabel("target epsilon (" + caption + ")", fontsize=8)
    ax.set_ylabel(f"{metric} (mean, 95% CI over seeds)")
    ax.set_title("Privacy-utility")
    _legend(ax)
    return fig


def rounds(table: pd.DataFrame, metric: str, path: Path) -> Path:
    return _save(rounds_figure(table, metric), path)


def rounds_figure(table: pd.DataFrame, metric: str):  # type: ignore[no-untyped-def]
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (cell, group) in enumerate(table.groupby("cell", sort=False)):
        stats = [(r, *_ci(g[metric].to_numpy(dtype=float))) for r, g in group.groupby("round")]
        x, y, half = (np.array(v) for v in zip(*stats, strict=True))
        ax.plot(x, y, marker="." if len(x) < 30 else None, color=f"C{i % 10}", label=cell)
        below, above = clipped_errors(y, half)
        ax.fill_between(x, y - below, y + above, color=f"C{i % 10}", alpha=0.15)
    first, last = table["round"].min(), table["round"].max()
    if last - first < 2:  # one or two rounds: whole rounds either side
        ax.set_xlim(first - 1, last + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"{metric} (mean, 95% CI band over seeds)")
    ax.set_title("Accuracy against rounds")
    _legend(ax)
    return fig


def fairness(merchants: pd.DataFrame, metric: str, path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    cells = list(dict.fromkeys(merchants["cell"]))
    for i, cell in enumerate(cells):
        group = merchants[merchants["cell"] == cell]
        left.scatter(group["users"], group[metric], s=10, alpha=0.6, color=f"C{i % 10}", label=cell)
    if merchants["users"].max() > 10 * max(merchants["users"].min(), 1):
        left.set_xscale("log")
    left.set_xlabel("merchant size (users)")
    left.set_ylabel(f"{metric} per merchant")
    left.set_title("Per-merchant accuracy by size")
    _legend(left)
    data = [merchants.loc[merchants["cell"] == c, metric].dropna().to_numpy() for c in cells]
    right.boxplot(data, showmeans=True)
    right.set_xticks(range(1, len(cells) + 1), cells, rotation=60, ha="right", fontsize=7)
    right.set_ylabel(f"{metric} per merchant (all seeds)")
    right.set_title("Spread across merchants")
    return _save(fig, path)


def communication(runs: pd.DataFrame, metric: str, path: Path) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    by_cell = runs.groupby("cell", sort=False)
    cells = list(by_cell.groups)
    up = by_cell["bytes-train-up"].mean().reindex(cells) / 1024
    down = by_cell["bytes-train-down"].mean().reindex(cells) / 1024
    x = np.arange(len(cells))
    left.bar(x - 0.2, up, width=0.4, label="up (update)")
    left.bar(x + 0.2, down, width=0.4, label="down (global model)")
    left.set_xticks(x, cells, rotation=60, ha="right", fontsize=7)
    left.set_ylabel("KiB per client per training round")
    left.set_title("Communication per client per round")
    _legend(left)
    for i, cell in enumerate(cells):
        group = runs[runs["cell"] == cell]
        mean, half = _ci(group[metric].to_numpy(dtype=float))
        right.errorbar(
            group["bytes-train-up"].mean() / 1024,
            mean,
            yerr=clipped_errors(np.array([mean]), np.array([half])),
            marker="o",
            capsize=3,
            color=f"C{i % 10}",
            label=cell,
        )
    right.set_xlabel("KiB sent per client per round")
    right.set_ylabel(f"{metric} (mean, 95% CI)")
    right.set_title("Accuracy against upload size")
    _legend(right)
    return _save(fig, path)


def _legend(ax) -> None:  # type: ignore[no-untyped-def]
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles[:MAX_LEGEND],
            labels[:MAX_LEGEND],
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),  # beside the axes: it covers no bar, point or band
            borderaxespad=0.0,
        )


def _save(fig, path: Path) -> Path:  # type: ignore[no-untyped-def]
    import os
    import tempfile

    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        fig.savefig(staging, dpi=110, bbox_inches="tight")  # the legend beside, kept
        os.replace(staging, path)
    finally:
        plt.close(fig)
        Path(staging).unlink(missing_ok=True)
    return path


def plot_all(tables: dict[str, pd.DataFrame], axes: Sequence[str], k: int, out: Path) -> list[Path]:
    """Every plot the tables can support, under ``out``; returns the files written."""
    metric = f"ndcg@{k}"
    runs = tables["runs"]
    written: list[Path] = []
    if runs.empty:
        return written
    written.append(privacy_utility(runs, axes, metric, out / "privacy_utility.png"))
    if not tables["rounds"].empty:
        written.append(rounds(tables["rounds"], metric, out / "rounds.png"))
    if not tables["merchants"].empty:
        written.append(fairness(tables["merchants"], metric, out / "fairness.png"))
    if runs["bytes-train-up"].notna().any():
        written.append(communication(runs, metric, out / "communication.png"))
    return written
