"""Many small merchants: what a private federation serves, beside DP popularity and no DP.

A synthetic federation of ``--merchants`` merchants whose user counts are drawn
log-uniformly (a power law) from ``--size-range`` runs through the real
Simulation Engine once without DP and once per ``--epsilons`` (user-level, δ =
1e-6, Opacus RDP, Poisson sampling of users) with the private defaults
(``common.privacy.config.PRIVATE_DEFAULTS`` and the model's private recipe,
``common.recipes``, then ``--private-set`` pairs, e.g. ``model=ease``).
Side by side, on the same test users (leave-last-out, full ranking, NDCG@10):

* the non-private federated model;
* the DP model alone, at each ε;
* what each merchant serves (its own choice on held-out items,
  :mod:`common.source_choice`): the DP model, DP popularity or a blend;
* DP popularity at the same ε (each merchant's counts released once with the
  whole ε, summed).

Ratios are paired over users with delta-method standard errors; per merchant,
the served NDCG@10 minus DP popularity's with its paired standard error.

    python benchmarks/small_merchants.py [--merchants 50] [--size-range 200,2000] [--epsilons 3]

Writes ``benchmarks/results/small_merchants.json``. The synthetic generator
draws from a latent-factor model and flatters MF: this measures scale and the
serving rule, not real-data quality (``real_data.py`` does that).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data_rows import ratio_se  # noqa: E402  (a sibling module)

from common.config import parse_run_config  # noqa: E402
from common.constants import ndcg_at  # noqa: E402
from common.data.dataset import concat_user_item_data  # noqa: E402
from common.data.partition import PartitionConfig  # noqa: E402
from common.recipes import parse_set_pairs, run_settings  # noqa: E402
from simulations.baselines import evaluate_dp_popularity  # noqa: E402
from simulations.merchants import prepare_merchants  # noqa: E402
from simulations.runner import DataSource, SimulationSpec, simulate  # noqa: E402
from simulations.served import Served, served_by_merchant  # noqa: E402
from simulations.synthetic import SyntheticSpec, generate_federation  # noqa: E402

K = 10
SEED = 0
DELTA = 1e-6
NDCG = ndcg_at(K)


def _aligned(served: list[Served], position: dict[str, int], n: int) -> npt.NDArray[np.float64]:
    out = np.full(n, np.nan)
    for one in served:
        rows = [position[one.user_keys[u]] for u in one.result.users]
        out[rows] = one.result.per_user[NDCG]
    if np.isnan(out).any():
        raise RuntimeError(f"{int(np.isnan(out).sum())} test users were not scored")
    return out


def _mean_se(values: npt.NDArray[np.float64]) -> dict[str, float]:
    return {
        "ndcg@10": float(values.mean()),
        "se": float(values.std(ddof=1) / math.sqrt(len(values))),
    }


def _ratio(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> dict[str, float]:
    ratio, se = ratio_se(a, b)
    return {"ratio": round(ratio, 4), "se": round(se, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--merchants", type=int, default=50)
    parser.add_argument(
        "--size-range",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=(200, 2000),
        help="users per merchant, drawn log-uniformly (default 200,2000)",
    )
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--epsilons", default="3")
    parser.add_argument(
        "--private-set", dest="private_pairs", action="append", default=[], metavar="KEY=VALUE"
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
    synthetic = SyntheticSpec(
        num_merchants=args.merchants,
        num_items=args.items,
        merchant_size_range=args.size_range,
        seed=SEED,
    )
    source = DataSource(synthetic=synthetic)
    events = generate_federation(synthetic)
    report: dict[str, Any] = {
        "benchmark": "small_merchants",
        "data": {"synthetic": vars(synthetic) | {"event_mix": list(synthetic.event_mix)}},
        "unit": "user",
        "delta": DELTA,
        "accountant": "rdp",
        "sampling": "Poisson sampling of users at rate q",
        "private_settings": {  # at each epsilon of --epsilons
            k: v
            for k, v in run_settings(
                parse_set_pairs(args.private_pairs),
                {"privacy-unit": "user", "target-epsilon": 1.0},
            ).items()
            if k != "target-epsilon"
        },
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        _, merchants = prepare_merchants(events, PartitionConfig(scheme="natural"), root / "data")
        names = sorted(merchants)
        datas = [merchants[n] for n in names]
        pooled, _ = concat_user_item_data(datas)
        keys = np.asarray(pooled.user_keys)[pooled.test_users]
        position = {key: i for i, key in enumerate(keys)}
        sizes = [m.num_users for m in datas]
        report["merchant_users"] = {
            "min": min(sizes),
            "median": int(np.median(sizes)),
            "max": max(sizes),
            "total": sum(sizes),
        }
        print(f"{len(names)} merchants, users {report['merchant_users']}", flush=True)

        def run(settings: dict[str, Any], name: str) -> tuple[Path, dict[str, Any], float]:
            spec = SimulationSpec(
                run=parse_run_config(settings),
                source=source,
                partition=PartitionConfig(scheme="natural"),
                run_dir=root / name,
                baselines=False,
            )
            started = time.perf_counter()
            results = simulate(spec, events=events)
            return spec.run_dir, results, time.perf_counter() - started

        run_dir, _, seconds = run({}, "non-private")
        non_private = _aligned(served_by_merchant(run_dir, k=K, seed=SEED), position, len(keys))
        report["non_private"] = {**_mean_se(non_private), "seconds": round(seconds, 1)}
        print(f"non-private federated NDCG@10 {non_private.mean():.4f} in {seconds:.0f} s")
        for epsilon in epsilons:
            settings = run_settings(  # the private defaults and the model's private recipe
                parse_set_pairs(args.private_pairs),
                {"privacy-unit": "user", "target-epsilon": epsilon, "target-delta": DELTA},
            )
            run_dir, results, seconds = run(settings, f"eps{epsilon:g}")
            model = _aligned(
                served_by_merchant(run_dir, k=K, seed=SEED, follow_choice=False),
                position,
                len(keys),
            )
            chosen = served_by_merchant(run_dir, k=K, seed=SEED)
            served = _aligned(chosen, position, len(keys))
            popularity_result = evaluate_dp_popularity(
                datas, pooled, run=parse_run_config(settings), names=names
            )
            dp_popularity = np.full(len(keys), np.nan)
            dp_popularity[
                [position[k] for k in np.asarray(pooled.user_keys)[popularity_result.users]]
            ] = popularity_result.per_user[NDCG]
            per_merchant = {}
            for one in chosen:
                rows = [position[one.user_keys[u]] for u in one.result.users]
                diff = served[rows] - dp_popularity[rows]
                per_merchant[one.name] = {
                    "users": len(rows),
                    "source": "model" if one.choice is None else one.choice.source,
                    "difference": round(float(diff.mean()), 5),
                    "difference_se": round(float(diff.std(ddof=1) / math.sqrt(len(rows))), 5),
                }
            below = [n for n, m in per_merchant.items() if m["difference"] < -m["difference_se"]]
            sources = [m["source"] for m in per_merchant.values()]
            spent = [m["dp-epsilon"] for m in results["privacy"]["per_merchant"].values()]
            row = {
                "epsilon": epsilon,
                "max_epsilon_spent": max(spent),
                "trained_items": results["privacy"]["trained_items"],
                "seconds": round(seconds, 1),
                "dp_model": _mean_se(model),
                "served": _mean_se(served),
                "dp_popularity": _mean_se(dp_popularity),
                "dp_model_over_dp_popularity": _ratio(model, dp_popularity),
                "served_over_dp_popularity": _ratio(served, dp_popularity),
                "dp_model_over_non_private": _ratio(model, non_private),
                "served_over_non_private": _ratio(served, non_private),
                "sources": {s: sources.count(s) for s in sorted(set(sources))},
                "merchants_served_below_dp_popularity_by_1se": below,
                "per_merchant": per_merchant,
            }
            report["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_merchant"}), flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "small_merchants.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
