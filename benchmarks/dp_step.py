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

The same two measurements for SASRec (``common/models/sasrec.py``): 256 users
per batch, each with a 50-item history (every prefix a target: 49 positions),
dim 64, 2 blocks, a sampled softmax against 256 uniform negatives per user;
throughput at 10k items and peak memory at 1M items (limit 3 GiB).

    python benchmarks/dp_step.py [--repeats 30] [--only mf|sasrec] [--out FILE]
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
from common.models.batches import (
    Batch,
    SequenceBatch,
    UserBatch,
    build_prefix_batch,
    draw_negatives,
)
from common.models.recent_items import RecentItemsRecommender
from common.privacy.accountant import PrivacyPlan

CONFIG = TrainConfig(learning_rate=0.05)
SEQUENCE_LENGTH = 50
SASREC = ModelConfig(
    kind="sasrec",
    embedding_dim=64,
    sasrec_blocks=2,
    sasrec_negatives=256,
    history_max=SEQUENCE_LENGTH,
    dropout=0.2,
)


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


def _sasrec(*, users: int, items: int) -> RecentItemsRecommender:
    """SASRec with a random 50-item history for each of ``users`` users."""
    model = build_model(
        SASREC, num_users=users, num_items=items, generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(model, RecentItemsRecommender)
    rng = np.random.default_rng(0)
    model.bind_histories(
        np.arange(users + 1, dtype=np.int64) * SEQUENCE_LENGTH,
        rng.integers(0, items, users * SEQUENCE_LENGTH),
    )
    return model


def _sequence_batches(
    model: RecentItemsRecommender, *, users: int, count: int, seed: int
) -> list[SequenceBatch]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        chosen = rng.choice(model.num_users, users, replace=False)
        batch = build_prefix_batch(model.lengths.numpy(), chosen)
        negatives = draw_negatives(
            users, SASREC.sasrec_negatives, num_items=model.num_items, rng=rng
        )
        out.append(SequenceBatch(users=batch.users, ends=batch.ends, negatives=negatives))
    return out


def throughput(*, repeats: int, users: int = 1024, items: int = 10_000) -> dict[str, float]:
    """MF: 1024 users per batch, ~50 rows each, dim 32."""
    plain_model = _model(users=4 * users, items=items, dim=32)
    dp_model = _model(users=4 * users, items=items, dim=32)
    batches: list[Batch] = list(_batches(users=users, items=items, count=4, seed=0))
    result = _side_by_side(plain_model, dp_model, batches, repeats=repeats, users=users)
    result["rows_per_batch"] = float(np.mean([b.row_items.numel() for b in batches]))
    return result


def sasrec_throughput(*, repeats: int, users: int = 256, items: int = 10_000) -> dict[str, float]:
    """SASRec: 256 users per batch, 50 items each (49 targets), 256 negatives per user."""
    plain_model = _sasrec(users=4 * users, items=items)
    dp_model = _sasrec(users=4 * users, items=items)
    batches: list[Batch] = list(_sequence_batches(plain_model, users=users, count=4, seed=0))
    result = _side_by_side(plain_model, dp_model, batches, repeats=repeats, users=users)
    result |= {"sequence_length": SEQUENCE_LENGTH, "negatives": SASREC.sasrec_negatives}
    return result


def _side_by_side(
    plain_model: Recommender,
    dp_model: Recommender,
    batches: list[Batch],
    *,
    repeats: int,
    users: int,
) -> dict[str, float]:
    items = plain_model.num_items
    plain = NonPrivateStep(plain_model, CONFIG)
    private = PrivateStep(
        dp_model,
        CONFIG,
        _plan(users, dp_model.num_users),
        generator=torch.Generator().manual_seed(1),
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
        "non_private_step_seconds": plain_s,
        "dp_step_seconds": dp_s,
        "throughput_ratio_dp_over_non_private": plain_s / dp_s,
    }


def _peak_child(kind: str) -> None:
    torch.set_num_threads(1)
    if kind == "sasrec":
        sasrec = _sasrec(users=256, items=1_000_000)
        step = PrivateStep(sasrec, CONFIG, _plan(256, 10_000), generator=torch.Generator())
        sequence_batch = _sequence_batches(sasrec, users=256, count=1, seed=2)[0]
        _measure(step, sequence_batch, rows=int(sequence_batch.row_items.numel()))
        return
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
    _measure(step, batch, rows=int(batch.row_items.numel()))


def _measure(step: PrivateStep, batch: Batch, *, rows: int) -> None:
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
                "rows": rows,
                "peak_rss_mib_before_step": before,
                "peak_rss_mib_whole_process": peak,
                "step_seconds": seconds,
            }
        )
    )


def peak_memory(kind: str = "mf", *, limit_mib: int = 2048) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--peak-child", kind],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    result["limit_mib"] = limit_mib
    result["under_limit"] = result["peak_rss_mib_whole_process"] < limit_mib
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "dp_step.json"
    )
    parser.add_argument("--only", choices=("mf", "sasrec"), help="one model's cases only")
    parser.add_argument("--peak-child", choices=("mf", "sasrec"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        _peak_child(args.peak_child)
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
    }
    if args.only in (None, "mf"):
        report["mf_dim32_batch1024_items10k"] = throughput(repeats=args.repeats)
        report["mf_dim64_batch256_items1m_peak_memory"] = peak_memory()
    if args.only in (None, "sasrec"):
        report["sasrec_dim64_seq50_batch256_items10k"] = sasrec_throughput(repeats=args.repeats)
        report["sasrec_dim64_seq50_batch256_items1m_peak_memory"] = peak_memory(
            "sasrec", limit_mib=3072
        )
    if args.only and args.out.is_file():  # keep the other model's entries
        report = json.loads(args.out.read_text()) | report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
