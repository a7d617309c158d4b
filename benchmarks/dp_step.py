"""DP-SGD step cost against the non-private step, side by side, and peak memory at 1M items.

Throughput: the same MF model and the same batches (1024 users, ~50 rows
each, 10k-item catalog, dim 32, one thread), timed alternately so both see the
same machine load:

* ``non-private``: :class:`client.training.loop.NonPrivateStep` (forward, backward,
  Adam on every parameter);
* ``dp``: :class:`client.training.private.PrivateStep` (per-user clipped sums
  in one backward, Opacus's DP optimizer adding N(0, (sigma C)^2) noise to the
  whole item table, Adam on shared parameters, Adam on the users' own rows).

Throughput ratio = non-private seconds / DP seconds (1.0 = free). Then, in a
fresh process, the peak resident memory of the whole process around one DP
step at 1,000,000 items, 256 users, dim 64 (model, Adam state and noise
included).

    python benchmarks/dp_step.py [--repeats 30] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from client.training.loop import NonPrivateStep
from client.training.private import PrivateStep
from common.config import TrainConfig
from common.models import ModelConfig, Recommender, build_model
from common.models.batches import UserBatch
from common.privacy.accountant import PrivacyPlan

CONFIG = TrainConfig(learning_rate=0.05)


def _plan(batch_users: int, population: int) -> PrivacyPlan:
    return PrivacyPlan(
        unit="user",
        accountant="rdp",
        delta=1e-6,
        target_epsilon=3.0,
        max_grad_norm=0.1,
        population=population,
        sample_rate=batch_users / population,
        steps_per_round=1,
        planned_rounds=1,
        noise_multiplier=1.0,
        count_noise_multiplier=0.0,
    )


def _batches(*, users: int, items: int, count: int, seed: int) -> list[UserBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        counts = rng.integers(25, 76, size=users)  # (B,) ~50 rows per user
        slot = np.repeat(np.arange(users), counts)
        out.append(
            UserBatch(
                users=torch.as_tensor(rng.choice(4 * users, users, replace=False)),
                row_slot=torch.as_tensor(slot, dtype=torch.int64),
                row_items=torch.as_tensor(rng.integers(0, items, len(slot)), dtype=torch.int64),
                labels=torch.as_tensor((rng.random(len(slot)) < 0.2).astype(np.float32)),
                row_weight=torch.as_tensor(1.0 / counts[slot], dtype=torch.float32),
            )
        )
    return out


def _model(*, users: int, items: int, dim: int) -> Recommender:
    return build_model(
        ModelConfig(embedding_dim=dim),
        num_users=users,
        num_items=items,
        generator=torch.Generator().manual_seed(0),
    )


def throughput(*, repeats: int, users: int = 1024, items: int = 10_000) -> dict[str, float]:
    batches = _batches(users=users, items=items, count=4, seed=0)
    plain_model = _model(users=4 * users, items=items, dim=32)
    dp_model = _model(users=4 * users, items=items, dim=32)
    plain = NonPrivateStep(plain_model, CONFIG)
    private = PrivateStep(
        dp_model, CONFIG, _plan(users, 4 * users), generator=torch.Generator().manual_seed(1)
    )
    for batch in batches:  # warm-up
        plain(batch)
        private(batch)
    plain_times, dp_times = [], []
    for i in range(repeats):  # alternate, so both see the same load
        batch = batches[i % len(batches)]
        started = time.perf_counter()
        plain(batch)
        plain_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        private(batch)
        dp_times.append(time.perf_counter() - started)
    plain_s, dp_s = statistics.median(plain_times), statistics.median(dp_times)
    return {
        "users_per_batch": users,
        "items": items,
        "rows_per_batch": float(np.mean([b.row_items.numel() for b in batches])),
        "non_private_step_seconds": plain_s,
        "dp_step_seconds": dp_s,
        "throughput_ratio_dp_over_non_private": plain_s / dp_s,
    }


def _peak_child() -> None:
    torch.set_num_threads(1)
    model = _model(users=256, items=1_000_000, dim=64)
    batch = _batches(users=256, items=1_000_000, count=1, seed=2)[0]
    batch = UserBatch(
        users=torch.arange(256),
        row_slot=batch.row_slot,
        row_items=batch.row_items,
        labels=batch.labels,
        row_weight=batch.row_weight,
    )
    step = PrivateStep(model, CONFIG, _plan(256, 10_000), generator=torch.Generator())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    step(batch)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    print(
        json.dumps(
            {
                "items": 1_000_000,
                "users_per_batch": 256,
                "dim": 64,
                "rows": int(batch.row_items.numel()),
                "peak_rss_mib_before_step": before,
                "peak_rss_mib_whole_process": peak,
                "step_seconds": seconds,
            }
        )
    )


def peak_memory() -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child"], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["limit_mib"] = 2048
    result["under_limit"] = result["peak_rss_mib_whole_process"] < 2048
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "dp_step.json"
    )
    parser.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        _peak_child()
        return
    torch.set_num_threads(1)
    report = {
        "benchmark": "dp_step",
        "machine": {
            "threads": 1,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "mf_dim32_batch1024_items10k": throughput(repeats=args.repeats),
        "mf_dim64_batch256_items1m_peak_memory": peak_memory(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
