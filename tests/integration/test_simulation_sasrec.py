"""SASRec in a real Flower simulation (Ray) with user-level DP: 2 merchants x 2 rounds,
every client reply inspected: only the shared Transformer tables travel, never a
user's sequence, id or anything user-indexed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.config import parse_run_config
from common.constants import ARRAYS_KEY, ITEM_COUNTS_KEY, LEDGER_KEY, MERCHANT_KEY, METRICS_KEY
from common.data.partition import PartitionConfig
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec
from tests.integration.test_simulation import ALLOWED_METRICS, recording_mod

pytestmark = pytest.mark.integration

SETTINGS = {
    "model": "sasrec",
    "sasrec-negatives": 16,
    "sasrec-blocks": 1,
    "embedding-dim": 8,
    "history-max": 20,
    "num-server-rounds": 2,
    "local-epochs": 1,
    "batch-users": 32,
    "privacy-unit": "user",
    "target-epsilon": 4.0,
    "target-delta": 1e-4,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrec-sim")
    log_dir = root / "replies"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=parse_run_config(SETTINGS),
        source=DataSource(
            synthetic=SyntheticSpec(num_merchants=2, num_users=200, num_items=60, seed=3)
        ),
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / "run",
        baselines=False,
        num_cpus=1,
    )
    rounds: list = []
    results = simulate(spec, on_round=rounds.append, client_mods=[recording_mod(log_dir)])
    return root / "run", results, rounds, log_dir


def test_private_sasrec_trains_two_rounds_within_each_merchants_budget(finished_run):
    run_dir, results, rounds, _ = finished_run
    assert [r.round for r in rounds] == [1, 2]
    assert all(sorted(r.train) == ["merchant-00", "merchant-01"] for r in rounds)
    assert not any(r.failures for r in rounds)
    shared = set(torch.load(run_dir / "global_model.pt"))
    assert "item_embedding.weight" in shared and "blocks.0.qkv.weight" in shared
    assert not any("user" in name for name in shared)
    for spent in results["privacy"]["per_merchant"].values():
        assert spent["privacy-unit"] == "user"
        assert 0.0 < spent["dp-epsilon"] <= SETTINGS["target-epsilon"] + 1e-9
    overall = results["federated"]["overall"]
    assert 0.0 <= overall["ndcg@10"] <= overall["hr@10"] <= 1.0
    for merchant in ("merchant-00", "merchant-01"):
        ledger = run_dir / "merchants" / merchant / "ledger.jsonl"
        bodies = [json.loads(line)["body"] for line in ledger.read_text().splitlines()]
        training = [b for b in bodies if b.get("release") == "dp-sgd"]
        assert len(training) >= 4  # reserve and commit of each of the two rounds
        assert {b["model"] for b in training} == {"sasrec"}
        assert {b["unit"] for b in training} == {"user"}
        assert set(training[0]["released"]) == shared and training[0]["kept_local"] == []


def test_no_reply_carries_a_users_sequence_id_or_user_indexed_array(finished_run):
    run_dir, _, _, log_dir = finished_run
    records = sorted(log_dir.glob("*.json"))
    kinds = sorted(path.name.split("-")[1] for path in records)
    # per merchant: the private item-count release (query), 2 train rounds, 1 evaluation
    assert kinds == ["evaluate"] * 2 + ["query"] * 2 + ["train"] * 4
    shared = set(torch.load(run_dir / "global_model.pt"))
    user_ids: set[str] = set()
    users = 0
    for merchant in (run_dir / "merchants").iterdir():
        ids = json.loads((merchant / "users.json").read_text())
        user_ids |= set(ids)
        users = max(users, len(ids))
    for path in records:
        record = json.loads(path.read_text())
        allowed = {ARRAYS_KEY, METRICS_KEY, MERCHANT_KEY, LEDGER_KEY, ITEM_COUNTS_KEY}
        assert set(record["records"]) <= allowed
        released = {k.split("/", 1)[1] for k in record["arrays"] if k.startswith(ARRAYS_KEY)}
        assert released <= shared
        metrics = set(record["metrics"][METRICS_KEY])
        # the merchant's privacy report (dp-epsilon, dp-noise-multiplier, ...) beside the rest
        assert {m for m in metrics if not m.startswith("dp-")} <= ALLOWED_METRICS
        text = json.dumps(record)
        assert not [u for u in user_ids if u in text], path.name
        with np.load(path.with_suffix(".npz")) as arrays:
            for key in arrays.files:
                assert arrays[key].dtype.kind == "f", key  # no item-id sequences
                assert users not in arrays[key].shape, key  # nothing indexed by user
