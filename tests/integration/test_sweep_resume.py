"""A 12-configuration x 2-seed sweep from one command, killed midway and resumed.

Slow (24 real simulations through Flower's Simulation Engine, about 6 minutes
on 2 cores): ``make test-slow``, which CI runs after the default suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = """
[experiment]
name = "acceptance-grid"
seeds = [0, 1]
baselines = false
cpus = 1

[data]
merchants = 2
users = 200
items = 80

[privacy]
delta = 1e-4

[run]
num-server-rounds = 2

[sweep]
"privacy.epsilon" = [2, "off"]
"run.compression" = ["none", "int8", "topk"]
"run.model" = ["mf", "neumf"]
"""


def _sweep(path: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simulations.cli",
        "experiment",
        "sweep",
        str(path),
        "--out",
        str(out),
    ]


def test_a_sweep_survives_a_kill_and_resumes_without_redoing_finished_runs(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(GRID, encoding="utf-8")
    out = tmp_path / "out"
    process = subprocess.Popen(
        _sweep(path, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len(list(out.glob("cells/*/seed-*/metrics.json"))) >= 3:
                break
            assert process.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("3 runs did not finish within 300 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and every Ray process it started
        process.wait(timeout=30)

    finished = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/seed-*/metrics.json")}
    assert 3 <= len(finished) < 24
    resumed = subprocess.run(_sweep(path, out), capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{24 - len(finished)} run(s) now, {len(finished)} finished before, 0 failed" in (
        " ".join(resumed.stdout.split())
    )
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items())  # not redone

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 24 and runs.groupby("cell").size().eq(2).all()
    summary = pd.read_csv(out / "summary.csv")
    ndcg = summary[summary["metric"] == "ndcg@10"]
    assert len(ndcg) == 12 and (ndcg["seeds"] == 2).all()
    assert (ndcg["ci-low"] <= ndcg["mean"]).all() and (ndcg["mean"] <= ndcg["ci-high"]).all()
    assert len(pd.read_parquet(out / "summary.parquet")) == len(summary)
    # compression shrinks what each client sends per round, in every cell
    up = summary[summary["metric"] == "bytes-train-up"].set_index("cell")["mean"]
    for cell in up.index:
        if "compression=none" in cell:
            assert up[cell.replace("none", "int8")] < up[cell]
            assert up[cell.replace("none", "topk")] < up[cell]
    for name in ("privacy_utility", "rounds", "fairness", "communication"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.image.imread(png).shape[0] > 300
    assert "24 of 24 runs finished" in (out / "report.html").read_text()
    manifest = json.loads((out / "sweep.json").read_text())
    assert len(manifest["cells"]) == 12 and manifest["seeds"] == [0, 1]
