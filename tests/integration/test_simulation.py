"""A real Flower simulation (Ray), 3 merchants x 2 rounds, with every client reply inspected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import parse_run_config
from common.constants import ARRAYS_KEY, LEDGER_KEY, MERCHANT_KEY, METRICS_KEY
from common.data.partition import PartitionConfig
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec

pytestmark = pytest.mark.integration

SHARED = {"item_embedding.weight", "item_bias.weight", "global_bias.bias"}
ALLOWED_METRICS = {
    "num-examples",
    "train-loss",
    "train-steps",
    "train-users",
    "train-seconds",
    "client-seconds",
    "client-startup-seconds",
    "eval-users",
    "eval-seconds",
    "auc",
    "hr@10",
    "ndcg@10",
    "recall@10",
    "sampled-hr@10",
    "sampled-ndcg@10",
}


def recording_mod(log_dir: Path):
    """A Flower client mod that saves every reply a client sends."""

    def mod(message, context, call_next):
        reply = call_next(message, context)
        content = reply.content
        index = len(list(log_dir.glob("*.json")))
        stem = f"{context.node_id}-{message.metadata.message_type}-{index:04d}-{id(reply)}"
        record = {
            "records": sorted(content.keys()),
            "arrays": {},
            "metrics": {k: dict(v) for k, v in content.metric_records.items()},
            "configs": {
                k: {kk: str(vv) for kk, vv in v.items()} for k, v in content.config_records.items()
            },
        }
        arrays = {}
        for name, array_record in content.array_records.items():
            for key, tensor in array_record.to_torch_state_dict().items():
                record["arrays"][f"{name}/{key}"] = list(tensor.shape)
                arrays[f"{name}/{key}"] = tensor.numpy()
        np.savez(log_dir / f"{stem}.npz", **{k.replace("/", "__"): v for k, v in arrays.items()})
        (log_dir / f"{stem}.json").write_text(json.dumps(record))
        return reply

    return mod


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    log_dir = root / "replies"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=parse_run_config({"num-server-rounds": 2, "embedding-dim": 8, "local-epochs": 2}),
        source=DataSource(
            synthetic=SyntheticSpec(num_merchants=3, num_users=240, num_items=120, seed=5)
        ),
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / "run",
    )
    rounds = []
    results = simulate(spec, on_round=rounds.append, client_mods=[recording_mod(log_dir)])
    return root / "run", results, rounds, log_dir


def test_run_directory_is_complete(finished_run):
    run_dir, _, _, _ = finished_run
    for name in (
        "config.json",
        "metrics.json",
        "catalog.json",
        "global_model.pt",
        "federation.json",
    ):
        assert (run_dir / name).is_file(), name
    merchants = sorted(p.name for p in (run_dir / "merchants").iterdir())
    assert merchants == ["merchant-00", "merchant-01", "merchant-02"]
    for name in merchants:
        assert (run_dir / "merchants" / name / "local_state.pt").is_file()
    assert set(torch.load(run_dir / "global_model.pt")) == SHARED


def test_two_rounds_with_three_merchants_and_sane_metrics(finished_run):
    _, results, rounds, _ = finished_run
    assert [r.round for r in rounds] == [1, 2]
    assert all(len(r.train) == 3 and not r.failures for r in rounds)
    assert rounds[0].evaluate == {} and len(rounds[1].evaluate) == 3  # evaluated at the end
    federated = results["federated"]
    test_users = sum(m["test_users"] for m in results["merchants"].values())
    assert federated["overall"]["eval-users"] == test_users
    # The federated mean is the user-weighted mean of the per-merchant values.
    per = federated["per_merchant"].values()
    weighted = sum(m["ndcg@10"] * m["eval-users"] for m in per) / test_users
    assert federated["overall"]["ndcg@10"] == pytest.approx(weighted)
    for method in ("federated", "reference", "centralised", "popularity"):
        overall = results[method]["overall"]
        assert 0.0 <= overall["ndcg@10"] <= overall["hr@10"] <= 1.0
        assert 0.0 < overall["auc"] < 1.0
    reference = results["reference"]  # EASE^R, its λ chosen on the validation split
    assert reference["method"] == "EASE^R"
    assert reference["validation"][f"{reference['lambda']:g}"] == max(
        reference["validation"].values()
    )
    # Training moved the model: its loss fell from round 1 to round 2 at every merchant.
    for name, metrics in rounds[1].train.items():
        assert metrics["train-loss"] < rounds[0].train[name]["train-loss"]


def test_no_client_message_carries_user_parameters_or_ids(finished_run):
    run_dir, _, _, log_dir = finished_run
    records = sorted(log_dir.glob("*.json"))
    assert len(records) == 3 * 2 + 3  # 3 merchants x 2 train rounds + 3 evaluations
    user_ids, user_rows = set(), set()
    for merchant in (run_dir / "merchants").iterdir():
        user_ids |= set(json.loads((merchant / "users.json").read_text()))
        local = torch.load(merchant / "local_state.pt")
        assert set(local) == {"user_embedding.weight", "user_bias.weight"}
        user_rows |= {row.tobytes() for row in local["user_embedding.weight"].numpy()}
    for path in records:
        record = json.loads(path.read_text())
        assert set(record["records"]) <= {ARRAYS_KEY, METRICS_KEY, MERCHANT_KEY, LEDGER_KEY}
        assert set(record["configs"].get(LEDGER_KEY, {"entries": 1})) == {"entries"}
        assert {k.split("/", 1)[1] for k in record["arrays"]} <= SHARED
        assert set(record["metrics"][METRICS_KEY]) <= ALLOWED_METRICS
        assert set(record["configs"][MERCHANT_KEY]) == {"name"}
        text = json.dumps(record)
        leaked = [u for u in user_ids if u in text]
        assert not leaked, f"raw user ids in {path.name}: {leaked[:3]}"
        with np.load(path.with_suffix(".npz")) as arrays:
            for key in arrays.files:
                array = arrays[key]
                if array.ndim == 2 and array.shape[1] == 8:
                    assert not user_rows & {row.tobytes() for row in array}, key


def receiving_mod(log_dir: Path):
    """A Flower client mod that saves the global model each merchant receives to train on."""

    def mod(message, context, call_next):
        if message.metadata.message_type == "train":
            arrays = message.content.array_records[ARRAYS_KEY].to_torch_state_dict()
            np.savez(
                log_dir / f"{context.node_id}-{id(message)}.npz",
                **{k: v.numpy() for k, v in arrays.items()},
            )
        return call_next(message, context)

    return mod


def test_a_warm_retrain_starts_from_the_previous_runs_global_model(finished_run, tmp_path):
    run_dir, _, _, _ = finished_run
    received = tmp_path / "received"
    received.mkdir()
    spec = SimulationSpec(
        run=parse_run_config(
            {
                "num-server-rounds": 1,
                "embedding-dim": 8,
                "local-epochs": 2,
                "init-from": str(run_dir),
            }
        ),
        source=DataSource(
            synthetic=SyntheticSpec(num_merchants=3, num_users=240, num_items=120, seed=5)
        ),
        partition=PartitionConfig(scheme="natural"),
        run_dir=tmp_path / "retrain",
        baselines=False,
    )
    simulate(spec, client_mods=[receiving_mod(received)])

    previous = torch.load(run_dir / "global_model.pt")
    files = sorted(received.glob("*.npz"))
    assert len(files) == 3  # round 1: one train message per merchant
    for path in files:
        with np.load(path) as got:
            assert set(got.files) == SHARED
            for name in SHARED:  # bit for bit the earlier run's published model
                np.testing.assert_array_equal(got[name], previous[name].numpy())
    history = json.loads((tmp_path / "retrain" / "federation.json").read_text())
    catalog = json.loads((run_dir / "catalog.json").read_text())["items"]
    assert history["warm_start"] == {
        "from": str(run_dir),
        "items-carried": len(catalog),
        "items-new": 0,
        "items-dropped": 0,
    }
    assert history["config"]["init-from"] == str(run_dir)
