"""Sweep bookkeeping, tables, plots and report, with a stand-in for the simulation.

The stand-in writes what ``simulate`` writes (metrics.json, federation.json in a
staged run directory) with numbers that depend on the cell and seed, so the
resume logic and the statistics are checked exactly and fast. The real
simulation runs in tests/integration/test_experiment_cli_run.py and, for a whole
12 x 2 grid killed and resumed, in tests/integration/test_sweep_resume.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t

from common.errors import ConfigError
from simulations.experiment import Experiment, ResolvedRun, load_experiment
from simulations.run_dir import staged_run_dir
from simulations.sweep import Job, jobs, run_sweep
from simulations.sweep_report import summarise_experiment

GRID = """
[experiment]
name = "fake"
seeds = [0, 1, 2]
[privacy]
delta = 1e-5
[sweep]
"privacy.epsilon" = [1, 8, "off"]
"run.compression" = ["none", "int8"]
"""
SIZES = {"m-a": 50, "m-b": 200, "m-c": 800}


def _ndcg(resolved: ResolvedRun, merchant: str) -> float:
    eps = resolved.run.privacy.target_epsilon if resolved.run.privacy.enabled else 100.0
    return 0.2 * eps / (eps + 2) + 0.01 * resolved.run.federation.seed + SIZES[merchant] / 1e4


def fake_simulation(experiment: Experiment, resolved: ResolvedRun, run_dir: Path) -> None:
    private = resolved.run.privacy.enabled
    up = 1000 if resolved.run.compression.enabled else 4000
    per_merchant = {
        m: {"ndcg@10": _ndcg(resolved, m), "hr@10": 2 * _ndcg(resolved, m), "eval-users": n}
        for m, n in SIZES.items()
    }
    rounds = [
        {
            "round": r,
            "train": {},
            "evaluate": {
                m: {**v, "ndcg@10": v["ndcg@10"] * r / 3} for m, v in per_merchant.items()
            },
            "bytes": {m: {"train-up": up, "train-down": 4000} for m in SIZES},
        }
        for r in (1, 2, 3)
    ]
    total = sum(SIZES.values())
    overall = {
        k: sum(v[k] * v["eval-users"] for v in per_merchant.values()) / total
        for k in ("ndcg@10", "hr@10")
    }
    metrics = {
        "federated": {"overall": {**overall, "eval-users": total}, "per_merchant": per_merchant},
        "centralised": {"overall": {"ndcg@10": 0.25}},
        "top_k": 10,
        "merchants": {m: {"users": n} for m, n in SIZES.items()},
        "timing": {"total_seconds": 1.0},
        "privacy": {
            "unit": resolved.run.privacy.unit,
            "target_epsilon": resolved.run.privacy.target_epsilon,
            "delta": resolved.run.privacy.delta,
            "accountant": resolved.run.privacy.accountant,
            "per_merchant": (
                {m: {"dp-epsilon": resolved.run.privacy.target_epsilon * 0.99} for m in SIZES}
                if private
                else {}
            ),
        },
    }
    with staged_run_dir(run_dir) as staging:
        (staging / "federation.json").write_text(json.dumps({"rounds": rounds}))
        (staging / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    path = tmp_path / "fake.toml"
    path.write_text(GRID, encoding="utf-8")
    return load_experiment(path)


def test_a_resume_runs_only_what_did_not_finish(tmp_path: Path, experiment: Experiment) -> None:
    out = tmp_path / "out"
    ran: list[Job] = []
    calls = 0

    def interrupted(exp: Experiment, resolved: ResolvedRun, run_dir: Path) -> None:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt  # as a kill would, mid-sweep
        fake_simulation(exp, resolved, run_dir)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(experiment, out, run_cell=interrupted)
    finished = [j for j in jobs(experiment) if (j.run_dir(out) / "metrics.json").is_file()]
    assert len(finished) == 4
    stamps = {j: (j.run_dir(out) / "metrics.json").stat().st_mtime_ns for j in finished}

    # a killed process leaves its hidden staging directory, ledger included
    fifth = jobs(experiment)[4]
    stale = fifth.run_dir(out).parent / f".seed-{fifth.seed}.x1y2"
    stale.mkdir(parents=True)
    (stale / "ledger.jsonl").write_text("{}\n")

    def recording(exp: Experiment, resolved: ResolvedRun, run_dir: Path) -> None:
        ran.append(next(j for j in jobs(exp) if j.run_dir(out) == run_dir))
        fake_simulation(exp, resolved, run_dir)

    outcome = run_sweep(experiment, out, run_cell=recording)
    assert len(outcome.done_before) == 4 and len(outcome.ran) == 18 - 4
    assert set(ran) == set(jobs(experiment)) - set(finished)
    assert all((j.run_dir(out) / "metrics.json").stat().st_mtime_ns == stamps[j] for j in finished)
    kept = fifth.run_dir(out).parent / f"seed-{fifth.seed}.aborted-1"
    assert outcome.aborted_kept == [kept] and (kept / "ledger.jsonl").is_file()
    assert run_sweep(experiment, out, run_cell=recording).ran == []  # nothing left


def test_a_failed_run_is_recorded_the_others_go_on_and_a_resume_retries_it(
    tmp_path: Path, experiment: Experiment
) -> None:
    out = tmp_path / "out"
    bad = jobs(experiment)[2]

    def flaky(exp: Experiment, resolved: ResolvedRun, run_dir: Path) -> None:
        if run_dir == bad.run_dir(out):
            raise ConfigError("target-delta=1e-05 must be below 1/(users at each merchant)")
        fake_simulation(exp, resolved, run_dir)

    outcome = run_sweep(experiment, out, run_cell=flaky)
    assert list(outcome.failed) == [bad] and len(outcome.ran) == 17
    record = json.loads(bad.failure_file(out).read_text())
    assert record["seed"] == bad.seed and "target-delta" in record["error"]
    again = run_sweep(experiment, out, run_cell=fake_simulation)
    assert again.ran == [bad] and not bad.failure_file(out).exists()


def test_an_edited_experiment_file_or_another_mode_cannot_resume(
    tmp_path: Path, experiment: Experiment
) -> None:
    out = tmp_path / "out"
    run_sweep(experiment, out, run_cell=fake_simulation)
    edited = experiment.path.with_name("edited.toml")
    edited.write_text(GRID.replace("[1, 8,", "[1, 9,"), encoding="utf-8")
    with pytest.raises(ConfigError, match="different experiment file"):
        run_sweep(load_experiment(edited), out, run_cell=fake_simulation)
    with pytest.raises(ConfigError, match="holds `fedrec experiment sweep` results"):
        run_sweep(experiment, out, run_cell=fake_simulation, mode="run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an experiment directory"):
        run_sweep(experiment, tmp_path / "other", run_cell=fake_simulation)


def test_tables_hold_every_run_and_the_summary_is_a_student_t_interval(
    tmp_path: Path, experiment: Experiment
) -> None:
    out = tmp_path / "out"
    run_sweep(experiment, out, run_cell=fake_simulation)
    tables, plots, report = summarise_experiment(experiment, out)
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 18 and set(runs["compression"]) == {"none", "int8"}
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "runs.parquet"), tables["runs"], check_dtype=False
    )
    summary = pd.read_csv(out / "summary.csv")
    row = summary[
        (summary["cell"] == "epsilon=1_compression=none") & (summary["metric"] == "ndcg@10")
    ]
    values = runs.loc[runs["cell"] == "epsilon=1_compression=none", "ndcg@10"].to_numpy()
    assert len(values) == 3
    half = t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
    assert row["mean"].item() == pytest.approx(values.mean())
    assert row["ci-high"].item() - row["ci-low"].item() == pytest.approx(2 * half)
    assert row["seeds"].item() == 3
    # the fake's NDCG grows with epsilon, so the table must order the cells so
    means = summary[summary["metric"] == "ndcg@10"].set_index("cell")["mean"]
    assert (
        means["epsilon=1_compression=none"]
        < means["epsilon=8_compression=none"]
        < means["epsilon=off_compression=none"]
    )
    bytes_up = summary[summary["metric"] == "bytes-train-up"].set_index("cell")["mean"]
    assert (
        bytes_up["epsilon=1_compression=int8"] == 1000
        and bytes_up["epsilon=1_compression=none"] == 4000
    )
    private = runs[runs["privacy-unit"] == "user"]["privacy"]
    assert all("at delta 1e-05" in s and "accountant RDP" in s and "Poisson" in s for s in private)
    fairness = runs["merchant-ndcg@10-size-spearman"]
    assert np.allclose(fairness, 1.0)  # bigger merchants score higher in the fake
    rounds = pd.read_csv(out / "rounds.csv")
    assert len(rounds) == 18 * 3 and rounds["round"].max() == 3
    assert len(pd.read_csv(out / "merchants.csv")) == 18 * 3

    assert {p.name for p in plots} == {
        "privacy_utility.png",
        "rounds.png",
        "fairness.png",
        "communication.png",
    }
    import matplotlib.image

    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(plot).shape
        assert height > 300 and width > 500
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "18 of 18 runs finished" in page and "at delta 1e-05" in page
