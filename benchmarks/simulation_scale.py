"""Benchmark: how a simulated federation scales in parties on one small machine.

Runs, through Flower's Simulation Engine (``simulations.runner.simulate``):

* cross-device: ``--devices`` one-user clients (synthetic users, ``device``
  partition), ``--rounds`` rounds, ``--fraction-train`` of the clients trained
  per round, every client evaluated after the last round;
* with ``--silo``, also cross-silo: ``--merchants`` merchants (synthetic
  natural partition of ``--silo-users`` users), every merchant in every round.

For each it records the wall time (preparing the parties' state directories,
the federation, and the whole call), peak memory (the driver's own peak RSS,
and the peak of the sampled RSS and PSS summed over the driver and all its
descendants: Ray's raylet, GCS and ClientApp actors), per-round seconds and
parties per round, and splits the federated wall time as
``benchmarks/simulation_overhead.py`` does: local compute on the critical path
(per round, max(slowest party, total work / cpus), for training and for
evaluation) versus framework overhead (everything else: Ray, actor
scheduling, Flower's message store, (de)serialisation, per-message work in
the ClientApp outside training).

    python benchmarks/simulation_scale.py [--silo] [--devices N] [--rounds N] [--out FILE]

Writes JSON to ``benchmarks/results/simulation_scale.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MB = 2**20


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc (Linux)."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _field_kb(path: str, field: str) -> int:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeMemory:
    """Samples RSS (every ``every`` s) and PSS (every ``pss_every``-th sample) of this process tree.

    RSS summed over processes counts shared pages (torch, Ray's object store)
    once per process; PSS splits them, so the PSS sum is the better estimate
    of what the tree really occupies.
    """

    def __init__(self, *, every: float = 1.0, pss_every: int = 5) -> None:
        self.every, self.pss_every = every, pss_every
        self.peak_rss = self.peak_pss = self.peak_driver_rss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = os.path.isdir("/proc/self")

    def __enter__(self) -> TreeMemory:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def _run(self) -> None:
        samples = 0
        while not self._stop.is_set():
            tree, pids, todo = _children(), [], [os.getpid()]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo.extend(tree.get(pid, []))
            each = [_field_kb(f"/proc/{p}/status", "VmRSS:") for p in pids]
            rss = sum(each)
            self.peak_driver_rss = max(self.peak_driver_rss, each[0] * 1024)
            self.peak_rss = max(self.peak_rss, rss * 1024)
            self.peak_processes = max(self.peak_processes, len(pids))
            if samples % self.pss_every == 0:
                pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
                self.peak_pss = max(self.peak_pss, pss * 1024)
            samples += 1
            self._stop.wait(self.every)


def _critical(per_round: list[list[float]], cpus: int) -> float:
    """Parties run on ``cpus`` actors: a round takes at least max(slowest, total / cpus)."""
    return float(sum(max(max(x, default=0.0), sum(x) / cpus) for x in per_round))


def _measure(
    label: str, *, settings: dict[str, Any], synthetic: Any, partition: Any, cpus: int
) -> dict[str, Any]:
    from common.config import parse_run_config, to_run_config
    from simulations.runner import DataSource, SimulationSpec, simulate

    run = parse_run_config(settings)
    with tempfile.TemporaryDirectory() as tmp, TreeMemory() as memory:
        run_dir = Path(tmp) / "run"
        spec = SimulationSpec(
            run=run,
            source=DataSource(synthetic=synthetic),
            partition=partition,
            run_dir=run_dir,
            baselines=False,
            num_cpus=cpus,
        )
        started = time.perf_counter()
        results = simulate(spec)
        wall = time.perf_counter() - started
        history = json.loads((run_dir / "federation.json").read_text())
    rounds = history["rounds"]
    train = [[m["train-seconds"] for m in r["train"].values()] for r in rounds]
    handler = [[m.get("client-seconds", 0.0) for m in r["train"].values()] for r in rounds]
    evals = [[m["eval-seconds"] for m in r["evaluate"].values()] for r in rounds]
    timing = results["timing"]
    federated = timing["federated_seconds"]
    critical = _critical(train, cpus) + _critical(evals, cpus)
    round_seconds = [r["seconds"] for r in rounds]
    parties = len(results["merchants"])
    driver_so_far = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(f"{label}: {parties} parties, wall {wall:.1f} s, rounds {round_seconds}")
    return {
        "parties": parties,
        "users": sum(m["users"] for m in results["merchants"].values()),
        "settings": {
            "given": settings,
            "run": to_run_config(run),  # every resolved run setting
            "partition": partition.__dict__,
            "synthetic": synthetic.__dict__,
            "cpus": cpus,
            "baselines": False,
        },
        "seconds": {
            "wall": wall,
            "prepare_state_dirs": timing["prepare_seconds"],
            "federated_wall": federated,
            "round_loop_wall": float(sum(round_seconds)),
            "startup_and_teardown": federated - float(sum(round_seconds)),
            "local_train_sum": float(sum(map(sum, train))),
            "clientapp_train_handler_sum": float(sum(map(sum, handler))),
            "local_eval_sum": float(sum(map(sum, evals))),
            "critical_path_compute": critical,
            "framework_overhead": federated - critical,
        },
        "ratios": {"framework_overhead_share": (federated - critical) / federated},
        "rounds": [
            {
                "round": r["round"],
                "seconds": r["seconds"],
                "trained": len(r["train"]),
                "evaluated": len(r["evaluate"]),
                "failures": len(r["failures"]),
            }
            for r in rounds
        ],
        "clients_per_round": max(len(r["train"]) for r in rounds),
        "evaluated_after_last_round": len(rounds[-1]["evaluate"]),
        "memory_mb": {
            "driver_peak_rss": memory.peak_driver_rss / MB if memory.available else None,
            "driver_peak_rss_process_so_far": driver_so_far / MB,
            "tree_peak_rss_sum": memory.peak_rss / MB if memory.available else None,
            "tree_peak_pss_sum": memory.peak_pss / MB if memory.available else None,
            "tree_peak_processes": memory.peak_processes,
            "note": "sampled every 1 s (PSS every 5 s): the driver, and the sum over the driver "
            "and all its descendants; driver_peak_rss_process_so_far: getrusage, exact, but "
            "over every run of this script so far",
        },
        "ndcg@10_federated": results["federated"]["overall"]["ndcg@10"],
    }


def _machine(cpus: int) -> dict[str, Any]:
    import flwr
    import ray
    import torch

    total = _field_kb("/proc/meminfo", "MemTotal:") * 1024  # 0 where there is no /proc
    return {
        "cpu_count": os.cpu_count(),
        "cpus_used": cpus,
        "memory_total_mb": round(total / MB) if total else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {"flwr": flwr.__version__, "ray": ray.__version__, "torch": torch.__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--devices", type=int, default=6000, help="one-user clients (6000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fraction-train", type=float, default=0.05, help="of clients (0.05)")
    parser.add_argument("--silo", action="store_true", help="also the cross-silo federation")
    parser.add_argument("--merchants", type=int, default=100, help="cross-silo merchants (100)")
    parser.add_argument("--silo-users", type=int, default=20000, help="cross-silo users (20000)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "simulation_scale.json"
    )
    args = parser.parse_args()

    from common.data.partition import PartitionConfig
    from simulations.runner import set_flower_environment
    from simulations.synthetic import SyntheticSpec

    set_flower_environment()
    common = {"num-server-rounds": args.rounds, "seed": 0}
    report: dict[str, Any] = {
        "benchmark": "simulation_scale",
        "machine": _machine(args.cpus),
        "runs": {},
    }
    report["runs"]["cross_device"] = _measure(
        "cross-device",
        settings={
            **common,
            "fraction-train": args.fraction_train,
            # Evaluating every client is one long phase; the default 600 s would cut it short.
            "round-timeout": 3600,
        },
        synthetic=SyntheticSpec(num_users=args.devices),  # as `fedrec simulate --users N`
        partition=PartitionConfig(scheme="device"),
        cpus=args.cpus,
    )
    if args.silo:
        report["runs"]["cross_silo"] = _measure(
            "cross-silo",
            settings={**common, "fraction-train": 1.0},
            synthetic=SyntheticSpec(num_merchants=args.merchants, num_users=args.silo_users),
            partition=PartitionConfig(scheme="natural"),
            cpus=args.cpus,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
