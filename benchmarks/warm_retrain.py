"""A retrain warm-started from the previous run's global model, beside a cold retrain.

The synthetic federation's log is cut in time: the first run trains on the
events before the ``--old-share`` quantile of timestamps ("what the merchants
had last week"), the retrains on every event (old and new; new users and new
items included). Through the real Simulation Engine, per configuration:

1. **first**: a cold run on the old events, R rounds;
2. **warm**: a retrain on all events from the first run's global model
   (``init-from``, :mod:`server.rounds.previous_model`), R rounds;
3. **cold**: the same retrain from the seeded initialisation, side by side;
4. **warm-short**: the warm retrain with a third of the rounds (under DP its σ
   is calibrated for those fewer rounds at the same ε, so each round is less noisy).

Every round is evaluated (leave-last-out, full ranking, NDCG@10 over every
merchant's test users). The figure of merit is the first round at which a
retrain reaches the first run's final NDCG@10, as a fraction of R; the
warm/cold NDCG ratio per round is paired over the same test users
(delta-method SE).

Configurations: ``mf`` without DP (the default recipe, 20 rounds) and
``mf`` under user-level DP-SGD at ``--epsilon`` per run (δ = 1e-6, Opacus
RDP, Poisson sampling of users; the private recipe, 10 rounds). Each private
run spends its own ε; a merchant's lifetime account composes them.

    python benchmarks/warm_retrain.py [--epsilon 3] [--old-share 0.8]
    python benchmarks/warm_retrain.py --data ../shared/data/ml-100k/u.data \
        --format movielens-100k --merchants 3 --out benchmarks/results/warm_retrain_ml100k.json

With ``--data`` a real log is split into ``--merchants`` by a hash of the user
key (a user stays with one merchant across the cut), and the non-private
configuration is the real-log recipe (the history model,
``common.recipes.REAL_LOG_DEFAULTS``, 12 rounds) instead of MF.

Writes ``benchmarks/results/warm_retrain.json``. Synthetic data flatters MF: this
measures how fast a retrain converges, not real-data quality.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data_rows import ratio_se  # noqa: E402  (a sibling module)

from common.config import parse_run_config  # noqa: E402
from common.constants import ndcg_at  # noqa: E402
from common.data.partition import PartitionConfig  # noqa: E402
from common.data.schema import Interactions  # noqa: E402
from common.recipes import run_settings  # noqa: E402
from simulations.runner import DataSource, SimulationSpec, simulate  # noqa: E402
from simulations.served import Served, served_by_merchant  # noqa: E402
from simulations.synthetic import SyntheticSpec, generate_federation  # noqa: E402

K = 10
SEED = 0
DELTA = 1e-6
NDCG = ndcg_at(K)


def _curve(run_dir: Path) -> list[float]:
    """NDCG@10 after each round, weighted by each merchant's test users."""
    history = json.loads((run_dir / "federation.json").read_text(encoding="utf-8"))
    out = []
    for record in history["rounds"]:
        metrics = [m for m in record["evaluate"].values() if m.get("eval-users", 0) > 0]
        if not metrics:
            raise RuntimeError(f"round {record['round']} of {run_dir} has no evaluation")
        users = sum(m["eval-users"] for m in metrics)
        out.append(sum(m[NDCG] * m["eval-users"] for m in metrics) / users)
    return out


def _per_user(run_dir: Path) -> dict[str, float]:
    """The final global model's NDCG@10 per test user (merchant-qualified user key)."""
    served: list[Served] = served_by_merchant(run_dir, k=K, seed=SEED, follow_choice=False)
    out = {}
    for one in served:
        for user, value in zip(one.result.users, one.result.per_user[NDCG], strict=True):
            out[f"{one.name}/{one.user_keys[user]}"] = float(value)
    return out


def _first_reaching(curve: list[float], target: float) -> int | None:
    return next((r for r, v in enumerate(curve, start=1) if v >= target), None)


def _ratio(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    users = sorted(set(a) & set(b))
    x: npt.NDArray[np.float64] = np.asarray([a[u] for u in users])
    y: npt.NDArray[np.float64] = np.asarray([b[u] for u in users])
    ratio, se = ratio_se(x, y)
    return {"ratio": ratio, "se": se, "users": len(users)}


def run_configuration(
    label: str,
    settings: dict[str, Any],
    old: Interactions,
    everything: Interactions,
    source: DataSource,
    root: Path,
) -> dict[str, Any]:
    rounds = parse_run_config(settings).federation.num_rounds

    def run(name: str, events: Interactions, extra: dict[str, Any]) -> tuple[Path, float]:
        spec = SimulationSpec(
            run=parse_run_config({**settings, **extra}),
            source=source,
            partition=PartitionConfig(scheme="natural"),
            run_dir=root / label / name,
            baselines=False,
        )
        started = time.perf_counter()
        simulate(spec, events=events)
        seconds = time.perf_counter() - started
        print(f"  {label}/{name}: {seconds:.0f} s", flush=True)
        return spec.run_dir, seconds

    first_dir, first_s = run("first", old, {})
    warm_dir, warm_s = run("warm", everything, {"init-from": str(first_dir)})
    cold_dir, cold_s = run("cold", everything, {})
    short_rounds = math.ceil(rounds / 3)
    short_dir, short_s = run(
        "warm-short",
        everything,
        {"init-from": str(first_dir), "num-server-rounds": short_rounds},
    )
    first, warm, cold = _curve(first_dir), _curve(warm_dir), _curve(cold_dir)
    short = _curve(short_dir)
    target = first[-1]
    warm_round, cold_round = _first_reaching(warm, target), _first_reaching(cold, target)
    history = json.loads((warm_dir / "federation.json").read_text(encoding="utf-8"))
    row = {
        "configuration": label,
        "rounds": rounds,
        "first_final_ndcg@10": target,
        "curves": {"first": first, "warm": warm, "cold": cold, "warm-short": short},
        "warm_rounds_to_first": warm_round,
        "cold_rounds_to_first": cold_round,
        "warm_fraction_of_rounds": None if warm_round is None else warm_round / rounds,
        "meets_one_third": warm_round is not None and warm_round <= rounds / 3,
        "warm_rounds_to_cold_final": _first_reaching(warm, cold[-1]),
        "final_warm_over_cold": _ratio(_per_user(warm_dir), _per_user(cold_dir)),
        "short_rounds": short_rounds,
        "short_final_over_cold_final": _ratio(_per_user(short_dir), _per_user(cold_dir)),
        "short_final_over_first_final": short[-1] / target,
        "warm_start": history["warm_start"],
        "seconds": {"first": first_s, "warm": warm_s, "cold": cold_s, "warm-short": short_s},
    }
    print(
        f"  {label}: first {target:.4f}; warm reaches it at round {warm_round}, cold at "
        f"{cold_round} (of {rounds}); final warm/cold {row['final_warm_over_cold']['ratio']:.3f}; "
        f"warm in {short_rounds} rounds / cold in {rounds}: "
        f"{row['short_final_over_cold_final']['ratio']:.3f}",
        flush=True,
    )
    return row


def _by_user(events: Interactions, merchants: int) -> Interactions:
    """A real log split into merchants by a hash of the user key: a user stays with one
    merchant whatever the cut (``natural`` partition then keeps that split)."""
    owner = np.asarray([zlib.crc32(str(u).encode()) % merchants for u in events.user_id])
    names = np.asarray([f"merchant-{i:02d}" for i in owner], dtype=object)
    return dataclasses.replace(events, merchant_id=names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilon", type=float, default=3.0, help="user-level ε per private run")
    parser.add_argument("--old-share", type=float, default=0.8, help="events the first run has")
    parser.add_argument("--data", type=Path, help="a real log instead of the synthetic one")
    parser.add_argument("--format", default="csv", help="the real log's format (fedrec's names)")
    parser.add_argument("--merchants", type=int, default=3, help="merchants of a real log")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/warm_retrain.json"))
    args = parser.parse_args()
    if not 0 < args.old_share < 1:
        raise SystemExit(f"--old-share must be in (0, 1), got {args.old_share}")
    every_round = {"evaluate-every": 1}
    private = {"privacy-unit": "user", "target-epsilon": args.epsilon, "target-delta": DELTA}
    if args.data is None:
        synthetic = SyntheticSpec(seed=SEED)
        source = DataSource(synthetic=synthetic)
        everything = generate_federation(synthetic)
        data: dict[str, Any] = {
            "synthetic": vars(synthetic) | {"event_mix": list(synthetic.event_mix)}
        }
        configurations = {
            "mf": run_settings({"model": "mf", **every_round}, {}),
        }
    else:
        from common.data.loaders import load_events

        source = DataSource(path=str(args.data), fmt=args.format)
        everything = _by_user(load_events(str(args.data), fmt=args.format), args.merchants)
        data = {"path": str(args.data), "format": args.format, "merchants": args.merchants}
        configurations = {  # the real-log recipe (common.recipes.REAL_LOG_DEFAULTS)
            "history": run_settings(every_round, {}, real_log=True),
        }
    configurations[f"mf-dp-eps{args.epsilon:g}"] = run_settings(
        {"model": "mf", **every_round}, private
    )
    cut = int(np.quantile(everything.timestamp, args.old_share))
    old = everything.take(np.flatnonzero(everything.timestamp < cut))
    new_users = len(set(everything.user_id) - set(old.user_id))
    new_items = len(set(everything.item_id) - set(old.item_id))
    print(
        f"{len(old.user_id)} old events, {len(everything.user_id)} in all "
        f"({new_users} new users, {new_items} new items)",
        flush=True,
    )
    report: dict[str, Any] = {
        "benchmark": "warm_retrain",
        "data": data
        | {
            "old_share": args.old_share,
            "old_events": len(old.user_id),
            "all_events": len(everything.user_id),
            "new_users": new_users,
            "new_items": new_items,
        },
        "privacy": {
            "epsilon_per_run": args.epsilon,
            "delta": DELTA,
            "unit": "user",
            "accountant": "rdp",
            "sampling": "Poisson sampling of users at rate q",
        },
        "metric": f"{NDCG}, leave-last-out, full ranking, every merchant's test users",
        "settings": configurations,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for label, settings in configurations.items():
            report["rows"].append(
                run_configuration(label, settings, old, everything, source, Path(scratch))
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    if not all(math.isfinite(r["first_final_ndcg@10"]) for r in report["rows"]):
        raise SystemExit("a run produced no finite NDCG@10")


if __name__ == "__main__":
    main()
