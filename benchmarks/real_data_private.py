"""The private rows of ``real_data.py``: user-level DP federated runs beside DP popularity.

For each ε (``--epsilons``), at ``--delta`` (δ), Opacus's RDP accountant and
Poisson sampling of users, on ``--private-merchants`` IID merchants:

* the federated model trained with DP-SGD through the Simulation Engine (the
  run's settings, then ``--private-set`` pairs over the private defaults), scored
  per user from the run directory like the non-private rows;
* DP popularity at the same ε, unit, δ and accountant: each of the *same*
  merchants (read back from that run's directory) releases its item counts
  once with the Gaussian mechanism at the whole ε
  (:func:`simulations.baselines.evaluate_dp_popularity`); ranked by the sum.

* what each merchant serves (``source-choice``, on by default): the DP model,
  DP popularity or a blend, chosen by each merchant on its users' last
  training items (:mod:`common.source_choice`), scored on the test items
  (:mod:`simulations.served`); with the number of merchants whose served
  NDCG@10 is below DP popularity's by more than one paired standard error.

Each DP row's ratio to DP popularity is paired over the same test users, with a
delta-method standard error. ``plot`` draws NDCG@10 against ε per dataset.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from real_data_rows import (  # a sibling module, not a package
    HR,
    NDCG,
    SEED,
    K,
    Row,
    federated_per_user,
    named,
    ratio_se,
    run_settings_summary,
)

from common.config import RunConfig
from common.data.dataset import UserItemData
from common.data.partition import PartitionConfig
from common.data.schema import Interactions
from common.models.registry import MODELS
from common.privacy.records import GRAM_SAMPLING
from simulations.runner import DataSource

DP_POPULARITY = "DP popularity"


def private_label(merchants: int, epsilon: float, recipe: str) -> str:
    return named(
        f"fedrec federated, {merchants} merchants IID, user-level DP ε={epsilon:g}", recipe
    )


def private_rows(
    run: RunConfig,
    *,
    epsilon: float,
    merchants: int,
    recipe: str,
    source: DataSource,
    events: Interactions,
    pooled: UserItemData,
    scratch: Path,
) -> list[Row]:
    """The DP model and DP popularity at ``epsilon`` (``run`` carries the privacy settings)."""
    from client.state.store import MerchantStore
    from common.constants import MERCHANTS_DIR
    from simulations.baselines import evaluate_dp_popularity
    from simulations.runner import SimulationSpec, simulate

    partition = PartitionConfig(scheme="iid", num_parties=merchants)
    spec = SimulationSpec(
        run=run,
        source=source,
        partition=partition,
        run_dir=scratch / f"{Path(source.name()).stem}-dp-{merchants}-eps{epsilon:g}",
        overwrite=True,
        baselines=False,
    )
    started = time.perf_counter()
    results = simulate(spec, events=events)
    seconds = time.perf_counter() - started
    hr, ndcg, _ = federated_per_user(spec.run_dir, pooled)
    privacy = results["privacy"]
    spent = {n: m["dp-epsilon"] for n, m in privacy["per_merchant"].items()}
    statement = {
        "unit": run.privacy.unit,
        "delta": run.privacy.delta,
        "accountant": run.privacy.accountant,
        "sampling": GRAM_SAMPLING
        if MODELS[run.model.kind].statistics
        else "Poisson sampling of users at rate q",
        "target_epsilon": epsilon,
        "max_epsilon_spent": max(spent.values()) if spent else math.nan,
    }
    model_row = Row(
        private_label(merchants, epsilon, recipe),
        hr,
        ndcg,
        seconds,
        params=run_settings_summary(run)
        | statement
        | {
            # one unit's L2 bound: C of DP-SGD, or 1 for a statistics release
            "max_grad_norm": 1.0
            if MODELS[run.model.kind].statistics
            else run.privacy.max_grad_norm,
            "trained_items": privacy["trained_items"],
            "partition": dataclasses.asdict(partition),
        },
    )
    names = sorted(p.name for p in (spec.run_dir / MERCHANTS_DIR).iterdir() if p.is_dir())
    datas = [MerchantStore(spec.run_dir / MERCHANTS_DIR / n).load_data() for n in names]
    started = time.perf_counter()
    popularity = evaluate_dp_popularity(datas, pooled, run=run, names=names)
    pop_row = Row.of(
        f"{DP_POPULARITY}, {merchants} merchants, ε={epsilon:g}",
        popularity,
        time.perf_counter() - started,
        params={
            "unit": run.privacy.unit,
            "delta": run.privacy.delta,
            "accountant": run.privacy.accountant,
            "target_epsilon": epsilon,
            "release": "each merchant's item counts, once, Gaussian mechanism at the whole ε "
            "(no sampling)",
        },
    )
    assert model_row.ndcg is not None and pop_row.ndcg is not None
    ratio, se = ratio_se(model_row.ndcg, pop_row.ndcg)
    model_row.params |= {
        "over_dp_popularity": round(ratio, 3),
        "over_dp_popularity_se": round(se, 3),
    }
    rows = [model_row, pop_row]
    if run.privacy.chooses_source:
        served = served_row(spec.run_dir, pooled, pop_row, label=model_row.method)
        served.params = statement | served.params
        rows.insert(1, served)
    return rows


def served_row(run_dir: Path, pooled: UserItemData, pop_row: Row, *, label: str) -> Row:
    """What each merchant serves, scored per test user, beside DP popularity per merchant."""
    import numpy as np

    from simulations.served import served_by_merchant

    started = time.perf_counter()
    served = served_by_merchant(run_dir, k=K, seed=SEED)
    position = {key: i for i, key in enumerate(np.asarray(pooled.user_keys)[pooled.test_users])}
    hr = np.full(len(pooled.test_users), np.nan)
    ndcg = np.full(len(pooled.test_users), np.nan)
    per_merchant = {}
    assert pop_row.ndcg is not None
    for one in served:
        rows = np.asarray([position[one.user_keys[u]] for u in one.result.users], dtype=np.int64)
        hr[rows] = one.result.per_user[HR]
        ndcg[rows] = one.result.per_user[NDCG]
        diff = ndcg[rows] - pop_row.ndcg[rows]
        diff_se = float(diff.std(ddof=1) / math.sqrt(len(rows))) if len(rows) > 1 else math.inf
        per_merchant[one.name] = {
            "users": len(rows),
            "source": "model" if one.choice is None else one.choice.source,
            "popularity_weight": 0.0 if one.choice is None else one.choice.weight,
            "served_ndcg": round(float(ndcg[rows].mean()), 5),
            "dp_popularity_ndcg": round(float(pop_row.ndcg[rows].mean()), 5),
            "difference": round(float(diff.mean()), 5),
            "difference_se": round(diff_se, 5),
        }
    if np.isnan(ndcg).any():
        raise RuntimeError(f"{int(np.isnan(ndcg).sum())} test users were not served")
    ratio, se = ratio_se(ndcg, pop_row.ndcg)
    below = [n for n, m in per_merchant.items() if m["difference"] < -m["difference_se"]]
    diff = ndcg - pop_row.ndcg
    overall_below = float(diff.mean()) < -float(diff.std(ddof=1) / math.sqrt(len(diff)))
    sources = [m["source"] for m in per_merchant.values()]
    return Row(
        label.replace("fedrec federated", "served (each merchant's choice)", 1),
        hr,
        ndcg,
        time.perf_counter() - started,
        params={
            "sources": {s: sources.count(s) for s in sorted(set(sources))},
            "over_dp_popularity": round(ratio, 3),
            "over_dp_popularity_se": round(se, 3),
            "below_dp_popularity_by_1se": {"overall": overall_below, "merchants": below},
            "per_merchant": per_merchant,
        },
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """NDCG@10 against ε: each dataset's DP model and DP popularity (± 1 standard error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [d for d in report["datasets"].values() if _curves(d)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, data in zip(axes[0], panels, strict=True):
        for name, points in _curves(data).items():
            eps = [p[0] for p in points]
            mean = [p[1] for p in points]
            se = [p[2] for p in points]
            ax.errorbar(eps, mean, yerr=se, marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks([1, 3, 8], labels=["1", "3", "8"])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("user-level ε (δ = 1e-6, Opacus RDP)")
        held = "validation" if "validation" in data["dataset"] else "test"
        ax.set_ylabel(f"NDCG@10 ({held} users, ± 1 SE)")
        ax.set_title(data["dataset"])
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curves(data: dict[str, Any]) -> dict[str, list[tuple[float, float, float]]]:
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for m in data["methods"]:
        method = m["method"]
        if "ε=" not in method or NDCG not in m:
            continue
        epsilon = float(m["params"]["target_epsilon"])
        name = (
            method.split(", ε=")[0]
            if method.startswith(DP_POPULARITY)
            else (method.replace(f" ε={epsilon:g}", ""))
        )
        curves.setdefault(name, []).append((epsilon, m[NDCG], m[f"{NDCG}_se"]))
    return {k: sorted(v) for k, v in curves.items()}
