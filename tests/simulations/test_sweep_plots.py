"""Sweep plots stay readable: whole rounds, intervals inside [0, 1], one epsilon mid-axis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulations.sweep_plots import clipped_errors, privacy_utility_figure, rounds_figure


def _visible_ticks(axis) -> list[float]:  # type: ignore[no-untyped-def]
    low, high = sorted(axis.get_view_interval())
    return [t for t in axis.get_ticklocs() if low <= t <= high]


def test_clipped_errors_keep_the_interval_inside_zero_and_one():
    y, half = np.array([0.01, 0.5, 0.98]), np.array([0.05, 0.1, 0.05])

    below, above = clipped_errors(y, half)

    assert below == pytest.approx([0.01, 0.1, 0.05])  # the first stops at 0, not -0.04
    assert above == pytest.approx([0.05, 0.1, 0.02])  # the last stops at 1, not 1.03


def test_rounds_plot_has_whole_round_ticks_and_no_band_below_zero():
    ndcg = {1: [0.001, 0.03], 2: [0.01, 0.05], 3: [0.02, 0.06]}  # wide t intervals over 2 seeds
    table = pd.DataFrame(
        [{"cell": "eps=1", "round": r, "ndcg@10": v} for r, vs in ndcg.items() for v in vs]
    )

    fig = rounds_figure(table, "ndcg@10")

    (ax,) = fig.axes
    ticks = _visible_ticks(ax.xaxis)
    assert ticks and all(float(t).is_integer() for t in ticks)
    (band,) = ax.collections
    lowest = min(path.vertices[:, 1].min() for path in band.get_paths())
    assert lowest == pytest.approx(0.0)  # round 1: 0.0155 - 0.18 clipped at 0
    legend = ax.get_legend()
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # beside, not over


def test_one_epsilon_sits_mid_axis_with_one_tick_and_bars_stay_above_zero():
    runs = pd.DataFrame(
        {
            "target-epsilon": [4.0, 4.0, 4.0],
            "ndcg@10": [0.001, 0.002, 0.04],
            "delta": [1e-6] * 3,
            "privacy-unit": ["user"] * 3,
            "accountant": ["rdp"] * 3,
        }
    )

    fig = privacy_utility_figure(runs, ["epsilon"], "ndcg@10")

    (ax,) = fig.axes
    assert ax.get_xlim() == (0.0, 8.0)
    assert list(ax.get_xticks()) == [4.0]
    (caps,) = [c for c in ax.collections if c.get_segments()]  # the error bar
    (segment,) = caps.get_segments()
    assert segment[:, 1].min() == pytest.approx(0.0)  # mean 0.0143, t half-width 0.06
