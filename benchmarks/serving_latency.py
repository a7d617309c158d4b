"""Benchmark: ``Recommend`` top-10 latency at 100,000 items, in process and over gRPC.

A merchant with ``--users`` users (25 interactions each, Zipf-popular items)
and an MF model (dimension 32) over a ``--items`` catalog is served exactly as
``fedrec serve`` serves it: a :class:`ServingIndex` snapshot behind the gRPC
service on 127.0.0.1. Latency is measured for known users (``exclude_seen``)
one request at a time (closed loop, one client), after a warm-up:

* ``baseline-torch``: the straightforward path, ``model.score_all`` through
  torch for the user, seen items masked, ``torch.topk``; in process;
* ``index``: fedrec's serving index (``ServingIndex.recommend``); in process;
* ``grpc``: the same through the gRPC service (channel, protobuf, thread pool);
* ``grpc-fold-in``: unseen users with 5 recent items (fold-in per request);
* ``grpc-neumf``: the same known-user request with a NeuMF model (reported only);
* ``grpc-sasrec``: the same known-user request with SASRec (dim 64, 2 blocks,
  each user's 50 most recent items read per request), and
  ``grpc-sasrec-recent-items``: unseen users read from 5 recent items.

    python benchmarks/serving_latency.py [--items 100000] [--users 5000] [--requests 3000]

Acceptance: p99 of ``grpc`` (MF) and of ``grpc-sasrec`` <= 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.serving.api import stubs  # noqa: E402
from client.serving.index import ServingIndex, ServingOptions  # noqa: E402
from client.serving.model_dir import load_global_model, publish  # noqa: E402
from client.serving.service import ModelHolder, start_server  # noqa: E402
from client.state.store import MerchantStore  # noqa: E402
from common.config import parse_run_config  # noqa: E402
from common.constants import MERCHANT_DATA_FILE, MERCHANT_USERS_FILE  # noqa: E402
from common.data.catalog import ItemCatalog  # noqa: E402
from common.data.dataset import UserItemData  # noqa: E402
from common.models.base import build_model  # noqa: E402
from simulations.runner import versions  # noqa: E402

SEQUENCE_LENGTH = 50
SETTINGS: dict[str, dict[str, object]] = {
    "mf": {"model": "mf", "embedding-dim": 32},
    "neumf": {"model": "neumf", "embedding-dim": 32},
    "sasrec": {
        "model": "sasrec",
        "embedding-dim": 64,
        "history-max": SEQUENCE_LENGTH,
        "sasrec-negatives": 256,
    },
}


def make_merchant(root: Path, *, items: int, users: int, kind: str, seed: int = 0) -> Path:
    """A served merchant: state (data + user vectors) and a published model; returns state."""
    rng = np.random.default_rng(seed)
    per_user = SEQUENCE_LENGTH if kind == "sasrec" else 25
    weights = 1.0 / np.arange(1, items + 1) ** 0.8
    weights /= weights.sum()
    if kind == "sasrec":  # 50 distinct items each, in the order drawn (the user's timeline)
        rows = [rng.choice(items, size=per_user, replace=False, p=weights) for _ in range(users)]
    else:
        rows = [np.unique(rng.choice(items, size=per_user, p=weights)) for _ in range(users)]
    counts = np.asarray([len(r) for r in rows])
    indptr = np.zeros(users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    data = UserItemData(
        user_keys=tuple(f"user-{u:06d}" for u in range(users)),
        num_items=items,
        train_indptr=indptr,
        train_items=np.concatenate(rows).astype(np.int64),
        train_values=np.ones(int(counts.sum()), dtype=np.float32),
        test_users=np.zeros(0, dtype=np.int64),
        test_items=np.zeros(0, dtype=np.int64),
        test_values=np.zeros(0, dtype=np.float32),
    )
    state = root / f"state-{kind}"
    data.save(state, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
    settings = SETTINGS[kind]
    model = build_model(
        parse_run_config(settings).model,
        num_users=users,
        num_items=items,
        generator=torch.Generator().manual_seed(seed),
    )
    MerchantStore(state).save_local(model.local_parameters())
    publish(
        root / f"models-{kind}",
        settings=settings,
        shared={n: p.detach() for n, p in model.shared_parameters().items()},
        catalog=ItemCatalog(keys=tuple(f"item-{i:06d}" for i in range(items))),
        prior=None,
        label="v1",
    )
    return state


def timed(fn: Callable[[int], object], n: int, *, warm: int = 50) -> dict[str, float]:
    for i in range(warm):
        fn(i)
    times = np.empty(n)
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        times[i] = time.perf_counter() - started
    ms = times * 1000.0
    return {
        "requests": n,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def measure(
    kind: str, root: Path, args: argparse.Namespace, rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """Latency figures for one model kind (MF: baseline, index, gRPC, fold-in; NeuMF: gRPC)."""
    import grpc

    messages, services = stubs()
    results: dict[str, dict[str, float]] = {}
    state = make_merchant(root, items=args.items, users=args.users, kind=kind)
    models = root / f"models-{kind}"
    index = ServingIndex.build(load_global_model(models), state, ServingOptions())
    users = [index.data.user_keys[u] for u in rng.integers(0, args.users, args.requests + 100)]
    recent = [
        tuple(index.keys[i] for i in rng.choice(args.items // 10, 5, replace=False))
        for _ in range(args.requests + 100)
    ]
    n = args.requests if kind in ("mf", "sasrec") else max(200, args.requests // 10)
    if kind == "mf":
        model = index.model

        def baseline(i: int) -> object:
            row = index.user_index[users[i]]
            with torch.no_grad():
                scores = model.score_all(torch.tensor([row]))[0]
            scores[torch.as_tensor(index.seen_items(row))] = -torch.inf
            return torch.topk(scores, 10)

        results["baseline-torch"] = timed(baseline, n)
        results["index"] = timed(lambda i: index.recommend(users[i], 10), n)
    holder = ModelHolder(models, state, ServingOptions())
    server = start_server(holder, port=0, workers=8, reload_interval=3600)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = services.RecommenderStub(channel)
    try:

        def known(i: int) -> object:
            return stub.Recommend(
                messages.RecommendRequest(user_id=users[i], k=10, exclude_seen=True), timeout=10
            )

        def cold(i: int) -> object:
            return stub.Recommend(
                messages.RecommendRequest(
                    user_id=f"new-{i}", k=10, exclude_seen=True, recent_item_ids=recent[i]
                ),
                timeout=30,
            )

        if kind == "mf":
            results["grpc"] = timed(known, n)
            results["grpc-fold-in"] = timed(cold, max(200, n // 10), warm=10)
        elif kind == "sasrec":
            results["grpc-sasrec"] = timed(known, n)
            results["grpc-sasrec-recent-items"] = timed(cold, max(200, n // 10), warm=10)
        else:
            results["grpc-neumf"] = timed(known, n, warm=10)
    finally:
        channel.close()
        server.stop(grace=1.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/serving_latency.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(1)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("mf", "neumf", "sasrec"):
            results.update(measure(kind, Path(tmp), args, rng))
            print(kind, json.dumps(results, indent=1), flush=True)
    report = {
        "benchmark": "serving_latency",
        "setup": {
            "items": args.items,
            "users": args.users,
            "k": 10,
            "embedding_dim": "32 (MF, NeuMF); 64 (SASRec, 2 blocks, 50 items per user)",
            "exclude_seen": True,
            "client": "one closed-loop client on 127.0.0.1, requests one at a time",
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "torch_threads": torch.get_num_threads(),
        },
        "results": results,
        "ratios": {
            "baseline_p50_over_index_p50": results["baseline-torch"]["p50_ms"]
            / results["index"]["p50_ms"],
            "grpc_overhead_p50_ms": results["grpc"]["p50_ms"] - results["index"]["p50_ms"],
            "sasrec_p50_over_mf_p50": results["grpc-sasrec"]["p50_ms"] / results["grpc"]["p50_ms"],
        },
        "acceptance": {
            "grpc_p99_ms": results["grpc"]["p99_ms"],
            "grpc_sasrec_p99_ms": results["grpc-sasrec"]["p99_ms"],
            "limit_ms": 10.0,
            "met": max(results["grpc"]["p99_ms"], results["grpc-sasrec"]["p99_ms"]) <= 10.0,
        },
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("ratios", "acceptance")}, indent=2))


if __name__ == "__main__":
    main()
