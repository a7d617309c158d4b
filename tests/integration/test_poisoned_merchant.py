"""A real private simulation (Ray) with two poisoning merchants: the federation shrugs them off.

Under epsilon = 3, merchant-00 sends NaN and merchant-01 sends 1e6 everywhere
with weight 1e6 (once, either made every global parameter NaN or 1,000,000
and the honest merchants stored NaN user vectors). Both are rejected every
round, named in the round history and the federation ledger; the global
model and every merchant's local state stay finite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from common.config import parse_run_config
from common.constants import (
    ARRAYS_KEY,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
    RUN_LEDGER_DIR,
    WEIGHT_KEY,
)
from common.data.partition import PartitionConfig
from common.privacy.ledger import read_ledger
from server.ledger import UPDATE_REJECTED
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec

pytestmark = pytest.mark.integration


def poison(message, context, call_next):
    """A client mod: merchant-00 and merchant-01 replace their train update by garbage."""
    reply = call_next(message, context)
    if message.metadata.message_type != "train" or reply.has_error():
        return reply
    content = reply.content
    name = content.config_records[MERCHANT_KEY][MERCHANT_NAME_FIELD]
    if name not in ("merchant-00", "merchant-01") or ARRAYS_KEY not in content.array_records:
        return reply
    arrays = {n: a.numpy() for n, a in content.array_records[ARRAYS_KEY].items()}
    value = np.nan if name == "merchant-00" else 1e6
    content[ARRAYS_KEY] = ArrayRecord({n: Array(np.full_like(a, value)) for n, a in arrays.items()})
    if name == "merchant-01":
        content.metric_records[METRICS_KEY][WEIGHT_KEY] = 1_000_000
    return reply


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("poisoned")
    spec = SimulationSpec(
        run=parse_run_config(
            {
                "num-server-rounds": 2,
                "embedding-dim": 8,
                "local-epochs": 1,
                "batch-users": 20,
                "privacy-unit": "user",
                "target-epsilon": 3.0,
                "target-delta": 1e-4,
            }
        ),
        source=DataSource(
            synthetic=SyntheticSpec(num_merchants=4, num_users=320, num_items=60, seed=4)
        ),
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / "run",
    )
    rounds = []
    simulate(spec, on_round=rounds.append, client_mods=[poison])
    return root / "run", rounds


def test_poisoned_updates_are_rejected_every_round_and_the_rest_aggregated(poisoned_run):
    run_dir, rounds = poisoned_run
    assert [r.round for r in rounds] == [1, 2]
    for record in rounds:
        assert record.aggregated
        assert sorted(record.train) == ["merchant-02", "merchant-03"]
        rejected = sorted(f for f in record.failures if ": update rejected: " in f)
        assert len(rejected) == 2
        assert rejected[0].startswith("merchant-00: update rejected: non-finite values in ")
        assert rejected[1].startswith("merchant-01: update rejected: update norm ")
    history = json.loads((run_dir / "federation.json").read_text())
    assert [len(r["failures"]) for r in history["rounds"]] == [2, 2]
    ledger = read_ledger(run_dir / RUN_LEDGER_DIR / "federation.jsonl")
    entries = [e.body for e in ledger.entries if e.kind == UPDATE_REJECTED]
    assert sorted((b["round"], b["merchant"]) for b in entries) == [
        (1, "merchant-00"),
        (1, "merchant-01"),
        (2, "merchant-00"),
        (2, "merchant-01"),
    ]


def test_the_global_model_and_every_local_state_stay_finite(poisoned_run):
    run_dir, _ = poisoned_run
    model = torch.load(run_dir / "global_model.pt")
    assert all(torch.isfinite(t).all() for t in model.values())
    assert max(float(t.abs().max()) for t in model.values()) < 10.0
    for merchant in sorted((run_dir / "merchants").iterdir()):
        local = torch.load(merchant / "local_state.pt")
        assert all(torch.isfinite(t).all() for t in local.values()), merchant.name
