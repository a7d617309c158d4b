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
delta-method standard error. With ``--draws R`` > 1 each cell runs R federations
(another run seed each, so fresh merchant noise keys) and 20 (at least R)
DP-popularity releases; every row is the per-user mean over its draws, and the
standard errors add each side's variance between draws to the users' paired
SE (one draw of DP popularity against another moves by more than the users'
SE at a few hundred users). ``plot`` draws NDCG@10 against ε per dataset.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
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
from common.constants import FEDERATION_FILE
from common.data.dataset import UserItemData
from common.data.partition import PartitionConfig
from common.data.schema import Interactions
from common.models.registry import MODELS
from common.privacy.records import GRAM_SAMPLING
from simulations.runner import DataSource

DP_POPULARITY = "DP popularity"
POPULARITY_DRAWS = 20  # with --draws > 1: DP popularity is cheap, so its draws are many


def private_label(merchants: int, epsilon: float, recipe: str) -> str:
    return named(
        f"fedrec federated, {merchants} merchants IID, user-level DP ε={epsilon:g}", recipe
    )


@dataclass(frozen=True)
class Draw:
    """One noise draw of a DP cell: a fresh federation (fresh merchant noise keys), scored
    per test user."""

    model: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # (hr, ndcg) per user
    served: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None
    merchant_of: npt.NDArray[np.int64] | None  # per test user, an index into ``choices``
    choices: list[tuple[str, str, float]]  # (merchant, source, popularity weight)
    spent: float  # the largest epsilon a merchant spent
    trained_items: int | None
    untrained: str  # why the federation trained nothing (train-min-items), if so
    seconds: float


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
    draws: int = 1,
) -> list[Row]:
    """The DP model, what each merchant serves and DP popularity at ``epsilon``, each the
    per-user mean over ``draws`` noise draws (``run`` carries the privacy settings)."""
    done = [
        _draw(run, epsilon, merchants, source, events, pooled, scratch, draw=d)
        for d in range(draws)
    ]
    pop_draws = max(draws, POPULARITY_DRAWS) if draws > 1 else 1
    started = time.perf_counter()
    popularity = _popularity_draws(run, scratch, source, merchants, epsilon, pooled, pop_draws)
    pop_seconds = time.perf_counter() - started
    statement = {
        "unit": run.privacy.unit,
        "delta": run.privacy.delta,
        "accountant": run.privacy.accountant,
        "sampling": GRAM_SAMPLING
        if MODELS[run.model.kind].statistics
        else "Poisson sampling of users at rate q",
        "target_epsilon": epsilon,
        "max_epsilon_spent": max(d.spent for d in done),
        "noise_draws": draws,
    }
    partition = PartitionConfig(scheme="iid", num_parties=merchants)
    model_row = Row(
        private_label(merchants, epsilon, recipe),
        *_mean_over(d.model for d in done),
        sum(d.seconds for d in done),
        params=run_settings_summary(run)
        | statement
        | {
            # one unit's L2 bound: C of DP-SGD, or 1 for a statistics release
            "max_grad_norm": 1.0
            if MODELS[run.model.kind].statistics
            else run.privacy.max_grad_norm,
            "trained_items": [d.trained_items for d in done],
            # draws whose federation trained nothing (train-min-items), and why
            "untrained_draws": sum(bool(d.untrained) for d in done),
            "untrained_reason": next((d.untrained for d in done if d.untrained), ""),
            "partition": dataclasses.asdict(partition),
        },
    )
    pop_row = Row(
        f"{DP_POPULARITY}, {merchants} merchants, ε={epsilon:g}"
        + (f", mean of {pop_draws} draws" if pop_draws > 1 else ""),
        *_mean_over(popularity),
        pop_seconds,
        params={
            "unit": run.privacy.unit,
            "delta": run.privacy.delta,
            "accountant": run.privacy.accountant,
            "target_epsilon": epsilon,
            "noise_draws": pop_draws,
            "release": "each merchant's item counts, once, Gaussian mechanism at the whole ε "
            "(no sampling)",
        },
    )
    pop_ndcg = [p[1] for p in popularity]
    model_row.params |= _against_popularity([d.model[1] for d in done], pop_ndcg)
    rows = [model_row, pop_row]
    if run.privacy.chooses_source:
        served = served_row(done, pop_ndcg, label=model_row.method)
        served.params = statement | served.params
        rows.insert(1, served)
    return rows


def _draw(
    run: RunConfig,
    epsilon: float,
    merchants: int,
    source: DataSource,
    events: Interactions,
    pooled: UserItemData,
    scratch: Path,
    *,
    draw: int,
) -> Draw:
    """One federation run at ``epsilon`` (fresh state, so fresh DP noise), scored per test
    user; its directory stays for :func:`_popularity_draws`."""
    from simulations.runner import SimulationSpec, simulate
    from simulations.served import served_by_merchant

    # a simulation derives each merchant's noise key from the run seed: another seed per draw
    # (the partition has its own seed, so every draw has the same merchants and users)
    seeded = dataclasses.replace(
        run, federation=dataclasses.replace(run.federation, seed=run.federation.seed + draw)
    )
    spec = SimulationSpec(
        run=seeded,
        source=source,
        partition=PartitionConfig(scheme="iid", num_parties=merchants),
        run_dir=scratch / f"{Path(source.name()).stem}-dp-{merchants}-eps{epsilon:g}-draw{draw}",
        overwrite=True,
        baselines=False,
    )
    started = time.perf_counter()
    results = simulate(spec, events=events)
    hr, ndcg, _ = federated_per_user(spec.run_dir, pooled)
    privacy = results["privacy"]
    spent = [m["dp-epsilon"] for m in privacy["per_merchant"].values()]
    served = merchant_of = None
    choices: list[tuple[str, str, float]] = []
    if run.privacy.chooses_source:
        position = {k: i for i, k in enumerate(np.asarray(pooled.user_keys)[pooled.test_users])}
        served_hr = np.full(len(pooled.test_users), np.nan)
        served_ndcg = np.full(len(pooled.test_users), np.nan)
        merchant_of = np.full(len(pooled.test_users), -1, dtype=np.int64)
        for index, one in enumerate(served_by_merchant(spec.run_dir, k=K, seed=SEED)):
            rows = np.asarray([position[one.user_keys[u]] for u in one.result.users], np.int64)
            served_hr[rows] = one.result.per_user[HR]
            served_ndcg[rows] = one.result.per_user[NDCG]
            merchant_of[rows] = index
            choice = one.choice
            choices.append(
                (
                    one.name,
                    "model" if choice is None else choice.source,
                    0.0 if choice is None else choice.weight,
                )
            )
        if np.isnan(served_ndcg).any():
            raise RuntimeError(f"{int(np.isnan(served_ndcg).sum())} test users were not served")
        served = (served_hr, served_ndcg)
    history = json.loads((spec.run_dir / FEDERATION_FILE).read_text())
    return Draw(
        model=(hr, ndcg),
        served=served,
        merchant_of=merchant_of,
        choices=choices,
        spent=max(spent) if spent else math.nan,
        trained_items=privacy["trained_items"],
        untrained=str(history.get("stopped_early") or "")
        if "train-min-items" in str(history.get("stopped_early") or "")
        else "",
        seconds=time.perf_counter() - started,
    )


def _popularity_draws(
    run: RunConfig,
    scratch: Path,
    source: DataSource,
    merchants: int,
    epsilon: float,
    pooled: UserItemData,
    draws: int,
) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """``draws`` DP-popularity releases (each merchant's counts at the whole epsilon) on the
    merchants of the first federation draw (every draw has the same), scored per test user."""
    from client.state.store import MerchantStore
    from common.constants import MERCHANTS_DIR
    from simulations.baselines import evaluate_dp_popularity

    root = scratch / f"{Path(source.name()).stem}-dp-{merchants}-eps{epsilon:g}-draw0"
    names = sorted(p.name for p in (root / MERCHANTS_DIR).iterdir() if p.is_dir())
    datas = [MerchantStore(root / MERCHANTS_DIR / n).load_data() for n in names]
    out = []
    for draw in range(draws):
        result = evaluate_dp_popularity(datas, pooled, run=run, names=names, draw=draw)
        out.append((result.per_user[HR], result.per_user[NDCG]))
    return out


def _untrained(history: dict[str, Any]) -> str:
    """Why the federation trained nothing (train-min-items), or ''."""
    stopped = str(history.get("stopped_early") or "")
    return stopped if "train-min-items" in stopped else ""


def _mean_over(
    pairs: Iterable[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-user means over draws of (hr, ndcg)."""
    listed = list(pairs)
    return (
        np.mean([p[0] for p in listed], axis=0),
        np.mean([p[1] for p in listed], axis=0),
    )


def difference_se(
    served: list[npt.NDArray[np.float64]], popularity: list[npt.NDArray[np.float64]]
) -> tuple[float, float]:
    """Mean served minus mean DP popularity (per-user means over each one's noise draws), and
    its standard error: the users' paired SE of the per-user difference, plus each side's
    variance between draws of its mean over its number of draws (the two parts of the
    randomness: which users are tested, and which noise the mechanisms drew)."""
    per_user = np.mean(served, axis=0) - np.mean(popularity, axis=0)
    n = len(per_user)
    users = float(per_user.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return float(per_user.mean()), math.sqrt(users**2 + _draws_var(served) + _draws_var(popularity))


def _draws_var(values: list[npt.NDArray[np.float64]]) -> float:
    """Variance between draws of the mean over users, over the number of draws (0 for one)."""
    means = np.asarray([v.mean() for v in values])
    return float(means.var(ddof=1) / len(means)) if len(means) > 1 else 0.0


def _against_popularity(
    values: list[npt.NDArray[np.float64]], popularity: list[npt.NDArray[np.float64]]
) -> dict[str, Any]:
    """The ratio of the draw-averaged NDCG@10 to DP popularity's, its SE (the users' paired
    delta-method SE and both sides' draw variances, propagated), and the difference test."""
    mean, pop = np.mean(values, axis=0), np.mean(popularity, axis=0)
    ratio, users_se = ratio_se(mean, pop)
    draws_var = ratio**2 * (
        _draws_var(values) / mean.mean() ** 2 + _draws_var(popularity) / pop.mean() ** 2
    )
    difference, se = difference_se(values, popularity)
    return {
        "over_dp_popularity": round(ratio, 3),
        "over_dp_popularity_se": round(math.sqrt(users_se**2 + draws_var), 3),
        "per_draw_ndcg": [round(float(v.mean()), 5) for v in values],
        "dp_popularity_per_draw_ndcg": [round(float(p.mean()), 5) for p in popularity],
        "difference": round(difference, 5),
        "difference_se": round(se, 5),
    }


def served_row(done: list[Draw], popularity: list[npt.NDArray[np.float64]], *, label: str) -> Row:
    """What each merchant serves, per test user averaged over draws, beside DP popularity
    overall and per merchant (a merchant is below when its mean difference is more than one
    standard error below 0, the SE counting users and draws)."""
    served = [d.served[1] for d in done if d.served is not None]
    first = done[0]
    assert first.served is not None and first.merchant_of is not None
    if not all(np.array_equal(d.merchant_of, first.merchant_of) for d in done):
        raise RuntimeError("the draws partitioned the users differently; merchants not comparable")
    per_merchant = {}
    for index, (name, _, _) in enumerate(first.choices):
        rows = first.merchant_of == index  # IID partitions of a seed: the same users each draw
        difference, se = difference_se([s[rows] for s in served], [p[rows] for p in popularity])
        sources = [d.choices[index][1] for d in done]
        per_merchant[name] = {
            "users": int(rows.sum()),
            "sources": {s: sources.count(s) for s in sorted(set(sources))},
            "popularity_weights": [d.choices[index][2] for d in done],
            "served_ndcg": round(float(np.mean([s[rows].mean() for s in served])), 5),
            "dp_popularity_ndcg": round(float(np.mean([p[rows].mean() for p in popularity])), 5),
            "difference": round(difference, 5),
            "difference_se": round(se, 5),
        }
    against = _against_popularity(served, popularity)
    below = [n for n, m in per_merchant.items() if m["difference"] < -m["difference_se"]]
    sources = [c[1] for d in done for c in d.choices]
    return Row(
        label.replace("fedrec federated", "served (each merchant's choice)", 1),
        *_mean_over(d.served for d in done if d.served is not None),
        0.0,
        params={
            "sources": {s: sources.count(s) for s in sorted(set(sources))},
            **against,
            "below_dp_popularity_by_1se": {
                "overall": against["difference"] < -against["difference_se"],
                "merchants": below,
            },
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
        if method.startswith(DP_POPULARITY):  # one curve per merchants (and per draw count)
            head, _, tail = method.partition(", ε=")
            name = head + (tail[tail.index(",") :] if "," in tail else "")
        else:
            name = method.replace(f" ε={epsilon:g}", "")
        curves.setdefault(name, []).append((epsilon, m[NDCG], m[f"{NDCG}_se"]))
    return {k: sorted(v) for k, v in curves.items()}
