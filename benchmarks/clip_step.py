"""Micro-benchmark: what per-user clipping adds to one training step's forward + backward.

Times, on one thread, the median over repeats (after warm-up) of

* ``plain``: ``per_user_loss(...).mean().backward()`` with ordinary dense grads,
* ``clipper``: :meth:`client.training.clipping.PerUserClipper.backward` on the same batch
  (one backward; per-user norms; clipped dense sum),

for MF (and NeuMF for reference) at 1024 users x ~50 rows on a 10k-item catalog
(synthetic random rows). Then, each in a fresh process, the peak RSS of one
plain step and of one clipper call at a 1,000,000-item catalog, 256 users,
dim 64 (a dense per-sample embedding gradient would need 256 x 1M x 64 floats).

    python benchmarks/clip_step.py [--repeats 20] [--out FILE]

Writes JSON to ``benchmarks/results/clip_step.json`` by default.
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

from client.training.clipping import PerUserClipper
from client.training.loop import per_user_loss
from common.config import TrainConfig
from common.models import ModelConfig, Recommender, build_model
from common.models.batches import UserBatch

CONFIG = TrainConfig()  # bce, weight decay on: item tables are called twice per step


def _synthetic_batch(
    *, users: int, items: int, mean_rows: int, rng: np.random.Generator
) -> UserBatch:
    counts = rng.integers(mean_rows // 2, 3 * mean_rows // 2 + 1, size=users)  # (B,) mean ~50
    slot = rng.permutation(np.repeat(np.arange(users), counts))  # (n,) users interleaved
    return UserBatch(
        users=torch.arange(users),
        row_slot=torch.as_tensor(slot, dtype=torch.int64),
        row_items=torch.as_tensor(rng.integers(0, items, len(slot)), dtype=torch.int64),
        labels=torch.as_tensor(rng.integers(0, 2, len(slot)), dtype=torch.float32),
        row_weight=torch.as_tensor(1.0 / counts[slot], dtype=torch.float32),
    )


def _setup(kind: str, *, users: int, items: int, dim: int) -> tuple[Recommender, UserBatch]:
    model = build_model(
        ModelConfig(kind=kind, embedding_dim=dim),
        num_users=users,
        num_items=items,
        generator=torch.Generator().manual_seed(0),
    )
    batch = _synthetic_batch(users=users, items=items, mean_rows=50, rng=np.random.default_rng(0))
    return model, batch


def _plain(model: Recommender, batch: UserBatch) -> None:
    model.zero_grad(set_to_none=True)
    per_user_loss(model, batch, CONFIG).mean().backward()


def _clipped(model: Recommender, batch: UserBatch, clipper: PerUserClipper) -> None:
    model.zero_grad(set_to_none=True)
    clipper.backward(
        lambda: per_user_loss(model, batch, CONFIG), row_slot=batch.row_slot, num_users=batch.size
    )


def _median_seconds(fn, *, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _time_step(kind: str, *, repeats: int) -> dict[str, float | int]:
    model, batch = _setup(kind, users=1024, items=10_000, dim=32)
    clipper = PerUserClipper(model, max_norm=1.0)
    plain = _median_seconds(lambda: _plain(model, batch), repeats=repeats)
    clipped = _median_seconds(lambda: _clipped(model, batch, clipper), repeats=repeats)
    return {
        "rows": int(batch.row_items.numel()),
        "plain_seconds": plain,
        "clipper_seconds": clipped,
        "clipper_over_plain": clipped / plain,
    }


def _rss_mib() -> float:
    """Current resident set size (Linux /proc; NaN elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return float("nan")
    return pages * resource.getpagesize() / 2**20


def _reset_peak_rss() -> bool:
    """Make ru_maxrss restart from the current RSS (Linux >= 4.0); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_child(mode: str) -> None:
    """Run in a fresh process: RSS before one step, and the peak RSS during it (MiB)."""
    torch.set_num_threads(1)
    model, batch = _setup("mf", users=256, items=1_000_000, dim=64)
    clipper = PerUserClipper(model, max_norm=1.0)
    before = _rss_mib()
    reset = _reset_peak_rss()  # else the peak would still include model set-up
    if mode == "clipper":
        _clipped(model, batch, clipper)
    else:
        _plain(model, batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    grad = model.item_embedding.weight.grad
    assert grad is not None and grad.shape == (1_000_000, 64)
    print(
        json.dumps(
            {
                "rss_mib_before_step": before,
                "peak_rss_mib_during_step": peak,
                "step_added_mib": peak - before,
                "peak_reset_before_step": reset,
                "rows": int(batch.row_items.numel()),
            }
        )
    )


def _peak_rss(mode: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", mode], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "clip_step.json"
    )
    parser.add_argument("--rss-child", choices=["plain", "clipper"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        _peak_rss_child(args.rss_child)
        return

    torch.set_num_threads(1)
    report = {
        "benchmark": "clip_step",
        "machine": {
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "step_1024_users_10k_items_dim_32": {
            "repeats": args.repeats,
            "mf": _time_step("mf", repeats=args.repeats),
            "neumf": _time_step("neumf", repeats=args.repeats),
        },
        "peak_rss_mf_256_users_1m_items_dim_64": {
            "plain": _peak_rss("plain"),
            "clipper": _peak_rss("clipper"),
            "item_embedding_grad_mib": 1_000_000 * 64 * 4 / 2**20,
            "dense_per_user_embedding_grads_gib": 256 * 1_000_000 * 64 * 4 / 2**30,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
