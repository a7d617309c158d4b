"""`fedrec experiment run` through the real Simulation Engine; reproducible from its directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simulations.cli import main

pytestmark = pytest.mark.integration

EXPERIMENT = """
[experiment]
name = "small-private"
seeds = [4]

[data]
merchants = 3
users = 450
items = 150

[privacy]
epsilon = 2
delta = 1e-4

[run]
model = "mf"
num-server-rounds = 3
compression = "int8"

[sweep]  # ignored by `run`
"run.model" = ["mf", "neumf"]
"""


def test_an_experiment_runs_from_a_file_and_again_from_its_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "small.toml"
    path.write_text(EXPERIMENT, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["experiment", "run", str(path), "--out", str(out), "--cpus", "1"]) == 0
    printed = capsys.readouterr().out
    assert "1 cell(s) x 1 seed(s) = 1 run(s)" in printed and "[sweep] is ignored" in printed

    run_dir = out / "cells" / "base" / "seed-4"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["target-epsilon"] == 2 and config["run"]["compression"] == "int8"
    assert config["run"]["seed"] == 4 and config["data"]["synthetic"]["seed"] == 4
    assert set(config["versions"]) >= {"flwr", "torch", "numpy"}
    history = json.loads((run_dir / "federation.json").read_text())
    assert [r["round"] for r in history["rounds"] if r["evaluate"]] == [1, 2, 3]
    assert (run_dir / "ledger" / "federation.jsonl").is_file()
    assert (out / "experiment.toml").read_text() == EXPERIMENT

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert 0 < row["epsilon-spent"] <= 2.0 + 1e-9 and row["delta"] == 1e-4
    # int8 codes plus a scale per row travel up (with the merchant's new ledger entries),
    # the float32 model comes down
    assert 0 < row["bytes-train-up"] < row["bytes-train-down"]
    assert len(pd.read_csv(out / "rounds.csv")) == 3
    assert {p.name for p in (out / "plots").iterdir()} == {
        "privacy_utility.png",
        "rounds.png",
        "fairness.png",
        "communication.png",
    }

    again = tmp_path / "again"
    assert main(["experiment", "run", str(out / "experiment.toml"), "--out", str(again)]) == 0
    first = json.loads((run_dir / "metrics.json").read_text())
    second = json.loads((again / "cells" / "base" / "seed-4" / "metrics.json").read_text())

    def quality(metrics: dict) -> dict:  # everything but timings
        return {
            name: {k: v for k, v in values.items() if not k.endswith("seconds")}
            for name, values in metrics["federated"]["per_merchant"].items()
        }

    assert second["federated"]["overall"] == first["federated"]["overall"]
    assert quality(second) == quality(first)  # the same numbers, from the directory
    assert second["privacy"]["per_merchant"] == first["privacy"]["per_merchant"]

    # the same command again finds the run finished and only rebuilds the tables
    assert main(["experiment", "run", str(path), "--out", str(out)]) == 0
    assert "0 run(s) now, 1 finished before" in capsys.readouterr().out
