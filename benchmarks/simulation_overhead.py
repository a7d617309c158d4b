"""Benchmark: where a simulated federation's wall time goes.

Runs the default synthetic federation (or a smaller one with --small) through
Flower's Simulation Engine and splits the federated wall time into

* local training time (critical path: per round, the slowest merchant's
  training, since merchants run in parallel on ``--cpus`` actors; also the sum),
* local evaluation time,
* framework overhead = federated wall time - critical-path compute
  (Ray start-up, actor scheduling, message (de)serialisation, aggregation).

A baseline of the same local training run in-process (no Flower, no Ray, one
process, merchants one after another) is timed side by side, so the ratio
``federated_wall / sequential_in_process`` reads directly.

    python benchmarks/simulation_overhead.py [--small] [--rounds N] [--out FILE]

Writes JSON to ``benchmarks/results/simulation_overhead.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _sequential_baseline(run_dir: Path, config, rounds: int) -> float:
    """The same per-merchant training, without Flower: one process, merchants in turn."""
    import torch

    from client.merchant import Merchant
    from client.state.store import MerchantStore
    from common.models.base import build_model
    from common.seeding import torch_generator

    torch.set_num_threads(1)
    merchants = [
        Merchant(MerchantStore(p), config.model, seed=config.federation.seed)
        for p in sorted((run_dir / "merchants").iterdir())
    ]
    num_items = merchants[0].data.num_items
    model = build_model(
        config.model,
        num_users=0,
        num_items=num_items,
        generator=torch_generator(config.federation.seed, "global-init"),
    )
    shared = {n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()}
    started = time.perf_counter()
    for server_round in range(1, rounds + 1):
        updates, weights = [], []
        for merchant in merchants:
            outcome = merchant.train(shared, config.train, server_round=server_round)
            updates.append(outcome.shared)
            weights.append(outcome.num_examples)
        total = sum(weights)
        shared = {
            n: sum(u[n] * w for u, w in zip(updates, weights, strict=True)) / total for n in shared
        }
    for merchant in merchants:
        merchant.evaluate(shared, k=config.federation.top_k, server_round=rounds)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="3 merchants, 600 users")
    parser.add_argument("--rounds", type=int, default=0, help="server rounds (default: config)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "simulation_overhead.json"
    )
    args = parser.parse_args()

    import tempfile

    from common.config import RunConfig, parse_run_config
    from common.data.partition import PartitionConfig
    from simulations.runner import DataSource, SimulationSpec, set_flower_environment, simulate
    from simulations.synthetic import SyntheticSpec

    set_flower_environment()
    synthetic = (
        SyntheticSpec(num_merchants=3, num_users=600, num_items=300)
        if args.small
        else SyntheticSpec()
    )
    run = parse_run_config({"num-server-rounds": args.rounds}) if args.rounds else RunConfig()
    rounds_log = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        spec = SimulationSpec(
            run=run,
            source=DataSource(synthetic=synthetic),
            partition=PartitionConfig(),
            run_dir=run_dir,
            baselines=False,
            num_cpus=args.cpus,
        )
        results = simulate(spec, on_round=rounds_log.append)
        history = json.loads((run_dir / "federation.json").read_text())
        # Reset local state so the in-process baseline starts from the same point.
        for state in run_dir.glob("merchants/*/local_state.pt"):
            state.unlink()
        baseline = _sequential_baseline(run_dir, replace(run), run.federation.num_rounds)

    train = [[m["train-seconds"] for m in r["train"].values()] for r in history["rounds"]]
    evals = [[m["eval-seconds"] for m in r["evaluate"].values()] for r in history["rounds"]]
    round_seconds = [r["seconds"] for r in history["rounds"]]

    # Merchants run on `cpus` actors in parallel: the critical path of a round is at least
    # max(slowest merchant, total work / cpus).
    def critical(per_round):
        return float(sum(max(max(x, default=0.0), sum(x) / args.cpus) for x in per_round))

    critical_compute = critical(train) + critical(evals)
    federated_wall = results["timing"]["federated_seconds"]
    loop_wall = float(sum(round_seconds))
    report = {
        "benchmark": "simulation_overhead",
        "machine": {
            "cpus_used": args.cpus,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "federation": {
            "merchants": len(results["merchants"]),
            "rounds": len(round_seconds),
            "users": sum(m["users"] for m in results["merchants"].values()),
            "synthetic": synthetic.__dict__,
        },
        "seconds": {
            "federated_wall": federated_wall,
            "round_loop_wall": loop_wall,
            "startup_and_teardown": federated_wall - loop_wall,
            "local_train_sum": float(sum(map(sum, train))),
            "local_eval_sum": float(sum(map(sum, evals))),
            "critical_path_compute": critical_compute,
            "framework_overhead": federated_wall - critical_compute,
            "framework_overhead_per_round": (loop_wall - critical_compute) / len(round_seconds),
            "sequential_in_process_baseline": baseline,
        },
        "ratios": {
            "framework_overhead_share": (federated_wall - critical_compute) / federated_wall,
            "federated_wall_over_sequential_baseline": federated_wall / baseline,
        },
        "round_seconds": round_seconds,
        "ndcg@10_federated": results["federated"]["overall"]["ndcg@10"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"seconds": report["seconds"], "ratios": report["ratios"]}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
