"""Tidy tables of an experiment directory: one row per observation, axes as columns.

* ``runs``: one row per (cell, seed): final metrics, baselines, privacy spent,
  payload bytes per client per round, fairness across merchants, wall time.
* ``summary``: one row per (cell, metric): seeds, mean, standard deviation and
  a 95% confidence interval for the mean (Student t over seeds; with one seed
  the interval is empty, NaN).
* ``rounds``: one row per (cell, seed, round) with the federation's
  user-weighted metrics at each evaluated round.
* ``merchants``: one row per (cell, seed, merchant): size and final metrics.

Written as CSV and Parquet beside each other.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.constants import EVAL_USERS
from simulations.experiment import Experiment
from simulations.sweep import Job, jobs

CONFIDENCE = 0.95
KEYS = ("cell", "seed")


def _read(path: Path) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return payload


def _weighted(per_merchant: dict[str, dict[str, float]], metric: str) -> float:
    pairs = [(m[metric], m.get(EVAL_USERS, 0.0)) for m in per_merchant.values() if metric in m]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else float("nan")


def _epsilon_spent(privacy: dict[str, Any]) -> float:
    if privacy.get("unit", "off") == "off":
        return float("nan")
    if privacy["unit"] == "client":
        return float(privacy.get("client_level", {}).get("epsilon", float("nan")))
    spent = [p.get("dp-epsilon", float("nan")) for p in privacy.get("per_merchant", {}).values()]
    return float(max(spent)) if spent else float("nan")


def describe_privacy(privacy: dict[str, Any]) -> str:
    """Epsilon with its delta, unit, accountant and sampling scheme, in one sentence."""
    from common.privacy.config import sampling_description

    unit = privacy.get("unit", "off")
    if unit == "off":
        return "no DP"
    if unit == "client":
        level = privacy.get("client_level") or {}
        if not level:
            return "client-level DP: nothing released"
        return (
            f"client-level DP: epsilon {level['epsilon']:.3g} at delta {level['delta']:g}, "
            f"unit {level['unit']}, accountant {level['accountant']}, "
            f"{level['sampled_per_round']} of {level['population']} clients sampled per round"
        )
    return (
        f"{unit}-level DP per merchant: epsilon {_epsilon_spent(privacy):.3g} spent "
        f"(target {privacy['target_epsilon']:g}) at delta {privacy['delta']:g}, "
        f"accountant {str(privacy['accountant']).upper()}, "
        f"{sampling_description(unit)}"
    )


def _bytes(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Mean payload bytes per participating client per round, by phase and direction."""
    from simulations.runner import mean_payload_bytes

    return {
        f"bytes-{key}": float("nan") if value is None else value
        for key, value in mean_payload_bytes(rounds).items()
    }


def _fairness(
    per_merchant: dict[str, dict[str, float]], sizes: dict[str, int], metric: str
) -> dict[str, float]:
    names = [n for n in per_merchant if metric in per_merchant[n] and n in sizes]
    values = np.array([per_merchant[n][metric] for n in names], dtype=float)
    if len(values) == 0:
        return {}
    out = {
        f"merchant-{metric}-min": float(np.nanmin(values)),
        f"merchant-{metric}-max": float(np.nanmax(values)),
        f"merchant-{metric}-std": float(np.nanstd(values)),
    }
    if len(values) >= 3:
        from scipy.stats import spearmanr

        size = np.array([sizes[n] for n in names], dtype=float)
        rho = spearmanr(size, values, nan_policy="omit").statistic
        out[f"merchant-{metric}-size-spearman"] = float(rho)
    return out


def _axis_values(job: Job) -> dict[str, Any]:
    return {key.split(".", 1)[1]: _plain(value) for key, value in job.cell.values}


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value)


def run_rows(experiment: Experiment, out: Path) -> tuple[list[dict[str, Any]], ...]:
    """(runs, rounds, merchants) rows of every finished run, in grid order."""
    runs, rounds_rows, merchant_rows = [], [], []
    for job in jobs(experiment):
        run_dir = job.run_dir(out)
        if not (run_dir / "metrics.json").is_file():
            continue
        metrics = _read(run_dir / "metrics.json")
        history = _read(run_dir / "federation.json")
        k = int(metrics["top_k"])
        head = {"cell": job.cell.id, **_axis_values(job), "seed": job.seed}
        row: dict[str, Any] = dict(head)
        federated = metrics["federated"]["overall"]
        row.update({m: v for m, v in federated.items() if m != EVAL_USERS})
        for method in ("centralised", "popularity", "dp-popularity"):
            if method in metrics:
                row[f"{method}-ndcg@{k}"] = metrics[method]["overall"][f"ndcg@{k}"]
        if "centralised" in metrics and metrics["centralised"]["overall"][f"ndcg@{k}"]:
            row[f"ndcg@{k}-vs-centralised"] = (
                federated[f"ndcg@{k}"] / metrics["centralised"]["overall"][f"ndcg@{k}"]
            )
        privacy = metrics["privacy"]
        row["privacy-unit"] = privacy["unit"]
        row["target-epsilon"] = privacy["target_epsilon"] if privacy["unit"] != "off" else math.inf
        row["epsilon-spent"] = _epsilon_spent(privacy)
        row["delta"] = privacy["delta"] if privacy["unit"] != "off" else float("nan")
        row["accountant"] = privacy["accountant"] if privacy["unit"] != "off" else ""
        row["privacy"] = describe_privacy(privacy)
        row["merchants"] = len(metrics["merchants"])
        row["rounds-run"] = len(history["rounds"])
        row["stopped-early"] = bool(history.get("stopped_early"))
        row["evaluation-missing"] = metrics.get("evaluation_missing", 0)
        row.update(_bytes(history["rounds"]))
        sizes = {n: int(m["users"]) for n, m in metrics["merchants"].items()}
        row.update(_fairness(metrics["federated"]["per_merchant"], sizes, f"ndcg@{k}"))
        row["wall-seconds"] = metrics["timing"]["total_seconds"]
        runs.append(row)
        for r in history["rounds"]:
            if r["evaluate"]:
                entry = dict(head, round=r["round"])
                for metric in (f"ndcg@{k}", f"hr@{k}", f"recall@{k}"):
                    entry[metric] = _weighted(r["evaluate"], metric)
                entry.update(_bytes([r]))
                rounds_rows.append(entry)
        for name, values in metrics["federated"]["per_merchant"].items():
            merchant_rows.append(
                dict(
                    head,
                    merchant=name,
                    users=sizes.get(name, 0),
                    **{m: v for m, v in values.items() if "@" in m},
                )
            )
    return runs, rounds_rows, merchant_rows


def mean_interval(values: np.ndarray) -> tuple[int, float, float, float]:
    """(n, mean, std, half-width of the 95% Student-t interval) over the non-NaN values.

    The std and the half-width are NaN with fewer than two values.
    """
    from scipy.stats import t

    values = values[~np.isnan(values)]
    n = len(values)
    mean = float(values.mean()) if n else float("nan")
    if n < 2:
        return n, mean, float("nan"), float("nan")
    with np.errstate(invalid="ignore"):  # inf (no DP's epsilon) has no spread
        std = float(values.std(ddof=1))
    return n, mean, std, float(t.ppf(0.5 + CONFIDENCE / 2, n - 1) * std / math.sqrt(n))


def summarise(runs: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Long table: for each cell and numeric metric, seeds, mean, std and a 95% CI."""
    if runs.empty:
        return pd.DataFrame(
            columns=["cell", *axes, "metric", "seeds", "mean", "std", "ci-low", "ci-high"]
        )
    skip = {"cell", "seed", *axes}
    metrics = [c for c in runs.columns if c not in skip and pd.api.types.is_numeric_dtype(runs[c])]
    rows = []
    for cell, group in runs.groupby("cell", sort=False):
        first = group.iloc[0]
        for metric in metrics:
            n, mean, std, half = mean_interval(group[metric].astype(float).to_numpy())
            rows.append(
                {
                    "cell": cell,
                    **{a: first[a] for a in axes},
                    "metric": metric,
                    "seeds": n,
                    "mean": mean,
                    "std": std,
                    "ci-low": mean - half,
                    "ci-high": mean + half,
                }
            )
    return pd.DataFrame(rows)


def _uniform(frame: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """An axis mixing numbers and words (epsilon = [1, "off"]) becomes a text column."""
    for axis in axes:
        if axis in frame and frame[axis].map(type).nunique() > 1:
            frame[axis] = frame[axis].astype(str)
    return frame


def _write(frame: pd.DataFrame, out: Path, name: str) -> list[Path]:
    from common.fileio import atomic_write_bytes

    csv = out / f"{name}.csv"
    parquet = out / f"{name}.parquet"
    atomic_write_bytes(csv, frame.to_csv(index=False).encode())
    atomic_write_bytes(parquet, frame.to_parquet(index=False))
    return [csv, parquet]


def write_tables(experiment: Experiment, out: Path) -> dict[str, pd.DataFrame]:
    """Build and write every table; returns them by name."""
    axes = [axis.name for axis in experiment.axes]
    runs, rounds, merchants = (
        _uniform(pd.DataFrame(rows), axes) for rows in run_rows(experiment, out)
    )
    tables = {
        "runs": runs,
        "summary": summarise(runs, axes),
        "rounds": rounds,
        "merchants": merchants,
    }
    for name, frame in tables.items():
        _write(frame, out, name)
    return tables
