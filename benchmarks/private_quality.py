"""Privacy/utility curve: user-level DP model vs DP popularity vs non-private federated.

A synthetic federation of 10 merchants and 50,000 users (1,500 items) runs
through the real Simulation Engine (``simulations.runner.simulate``) once
without DP (epsilon = infinity, the default non-private settings) and once per
epsilon in {1, 3, 8} at delta = 1e-6 with the private defaults
(``common.privacy.config.PRIVATE_DEFAULTS``). Beside each: popularity from
private counts at the same epsilon, unit and delta. Metric: NDCG@10 with full
ranking over the catalog, leave-last-out.

    python benchmarks/private_quality.py [--users 50000] [--out-dir benchmarks/results]

Writes ``private_quality.json`` (table and acceptance checks) and
``private_quality.png`` (the curve).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from common.config import parse_run_config
from common.constants import ndcg_at
from common.data.dataset import concat_user_item_data
from common.data.partition import PartitionConfig
from common.privacy.config import PRIVATE_DEFAULTS
from simulations.baselines import evaluate_dp_popularity, evaluate_popularity
from simulations.merchants import prepare_merchants
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec, generate_federation

EPSILONS = (1.0, 3.0, 8.0)
DELTA = 1e-6
K = 10


def _federated(settings: dict[str, Any], source: DataSource, events: Any, root: Path) -> dict:
    spec = SimulationSpec(
        run=parse_run_config(settings),
        source=source,
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / f"run-{len(list(root.iterdir()))}",
        baselines=False,
    )
    started = time.perf_counter()
    results = simulate(spec, events=events)
    return {
        "ndcg@10": results["federated"]["overall"][ndcg_at(K)],
        "hr@10": results["federated"]["overall"]["hr@10"],
        "seconds": time.perf_counter() - started,
        "privacy": results["privacy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=1_500)
    parser.add_argument("--merchants", type=int, default=10)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="redraw the PNG and the Markdown table from an existing private_quality.json",
    )
    args = parser.parse_args()
    if args.replot:
        _render(json.loads((args.out_dir / "private_quality.json").read_text()), args.out_dir)
        return

    synthetic = SyntheticSpec(
        num_merchants=args.merchants, num_users=args.users, num_items=args.items, seed=0
    )
    source = DataSource(synthetic=synthetic)
    events = generate_federation(synthetic)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        _, merchants = prepare_merchants(events, PartitionConfig(scheme="natural"), root / "data")
        names = sorted(merchants)
        datas = [merchants[n] for n in names]
        pooled, _ = concat_user_item_data(datas)
        popularity = evaluate_popularity(pooled, k=K, seed=0).means[ndcg_at(K)]
        runs_root = root / "runs"
        runs_root.mkdir()
        non_private = _federated({}, source, events, runs_root)
        rows = [
            {
                "epsilon": math.inf,
                "dp_model_ndcg@10": non_private["ndcg@10"],
                "dp_popularity_ndcg@10": popularity,
                "seconds": non_private["seconds"],
            }
        ]
        for epsilon in EPSILONS:
            settings = {
                **PRIVATE_DEFAULTS,
                "privacy-unit": "user",
                "target-epsilon": epsilon,
                "target-delta": DELTA,
            }
            private = _federated(settings, source, events, runs_root)
            dp_pop = evaluate_dp_popularity(
                datas, pooled, run=parse_run_config(settings), names=names
            ).means[ndcg_at(K)]
            spent = [m["dp-epsilon"] for m in private["privacy"]["per_merchant"].values()]
            rows.append(
                {
                    "epsilon": epsilon,
                    "dp_model_ndcg@10": private["ndcg@10"],
                    "dp_popularity_ndcg@10": dp_pop,
                    "max_epsilon_spent": max(spent),
                    "trained_items": private["privacy"]["trained_items"],
                    "seconds": private["seconds"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        row["dp_model_over_dp_popularity"] = row["dp_model_ndcg@10"] / row["dp_popularity_ndcg@10"]
        row["dp_model_over_non_private"] = row["dp_model_ndcg@10"] / non_private["ndcg@10"]
    at3 = next(r for r in rows if r["epsilon"] == 3.0)
    report = {
        "benchmark": "private_quality",
        "data": {"synthetic": vars(synthetic) | {"event_mix": list(synthetic.event_mix)}},
        "unit": "user",
        "delta": DELTA,
        "accountant": "rdp",
        "private_settings": PRIVATE_DEFAULTS,
        "non_private_popularity_ndcg@10": popularity,
        "rows": [
            {**r, "epsilon": "inf" if math.isinf(r["epsilon"]) else r["epsilon"]} for r in rows
        ],
        "acceptance_at_epsilon_3": {
            "dp_model_over_dp_popularity": at3["dp_model_over_dp_popularity"],
            "required_over_dp_popularity": 1.2,
            "dp_model_over_non_private": at3["dp_model_over_non_private"],
            "required_over_non_private": 0.6,
            "met": at3["dp_model_over_dp_popularity"] >= 1.2
            and at3["dp_model_over_non_private"] >= 0.6,
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "private_quality.json").write_text(json.dumps(report, indent=2))
    _render(report, args.out_dir)
    print(json.dumps(report, indent=2))


def _render(report: dict, out_dir: Path) -> None:
    rows = [
        {**r, "epsilon": math.inf if r["epsilon"] == "inf" else float(r["epsilon"])}
        for r in report["rows"]
    ]
    non_private = next(r for r in rows if math.isinf(r["epsilon"]))["dp_model_ndcg@10"]
    popularity = report["non_private_popularity_ndcg@10"]
    _plot(rows, non_private, popularity, out_dir / "private_quality.png")
    (out_dir / "private_quality.md").write_text(_table(rows))


def _table(rows: list[dict]) -> str:
    lines = [
        "| user-level ε (δ = 1e-6, RDP) | DP model NDCG@10 | DP popularity NDCG@10 "
        "| model ÷ DP popularity | model ÷ non-private |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["epsilon"]):
        eps = "∞ (non-private)" if math.isinf(r["epsilon"]) else f"{r['epsilon']:g}"
        lines.append(
            f"| {eps} | {r['dp_model_ndcg@10']:.4f} | {r['dp_popularity_ndcg@10']:.4f} "
            f"| {r['dp_model_over_dp_popularity']:.2f}× | {r['dp_model_over_non_private']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], non_private: float, popularity: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [r for r in rows if not math.isinf(r["epsilon"])]
    eps = [r["epsilon"] for r in finite]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(eps, [r["dp_model_ndcg@10"] for r in finite], "o-", label="DP federated MF")
    ax.plot(eps, [r["dp_popularity_ndcg@10"] for r in finite], "s--", label="DP popularity")
    ax.axhline(non_private, color="black", lw=1, label="non-private federated (eps = inf)")
    ax.axhline(popularity, color="grey", lw=1, ls=":", label="popularity (no DP)")
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.minorticks_off()
    ax.set_ylim(0, non_private * 1.1)
    ax.set_xlabel("user-level epsilon per merchant (delta = 1e-6, RDP)")
    ax.set_ylabel("NDCG@10 (full ranking)")
    ax.set_title("10 merchants, 50k users: privacy vs utility")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
