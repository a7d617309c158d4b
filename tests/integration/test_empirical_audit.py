"""The one-run canary audit on real Flower simulations: DP off is caught, DP on is not."""

from __future__ import annotations

import json

import pytest

from simulations.cli import main

pytestmark = pytest.mark.integration


def test_without_dp_the_canaries_give_a_clearly_positive_lower_bound(tmp_path, capsys):
    out = tmp_path / "off"
    assert main(["audit", "empirical", "--out", str(out), "--rounds", "5"]) == 0
    report = json.loads((out / "empirical_audit.json").read_text())
    assert report["claimed_epsilon"] is None and not report["dp"]
    assert report["epsilon_lower_bound"] >= 1.0
    assert report["correct"] / report["guesses"] >= 0.9
    assert "claimed: none (DP off)" in capsys.readouterr().out


def test_with_dp_the_lower_bound_stays_below_the_claimed_epsilon(tmp_path, capsys):
    out = tmp_path / "on"
    args = ["audit", "empirical", "--out", str(out), "--epsilon", "3", "--rounds", "5"]
    assert main(args) == 0
    report = json.loads((out / "empirical_audit.json").read_text())
    assert report["dp"] and report["claimed_epsilon"] == pytest.approx(3.0, rel=0.01)
    assert report["epsilon_lower_bound"] <= report["claimed_epsilon"]
    assert "user-level, RDP" in capsys.readouterr().out
