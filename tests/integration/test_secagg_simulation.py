"""SecAgg+ in a real simulation (Ray): same model as plain aggregation, no update seen alone."""

from __future__ import annotations

import json

import pytest
import torch

from common.config import parse_run_config
from common.constants import ARRAYS_KEY, MERCHANT_KEY
from common.data.partition import PartitionConfig
from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_path
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec
from tests.integration.test_simulation import SHARED, recording_mod

pytestmark = pytest.mark.integration

SETTINGS = {
    "num-server-rounds": 2,
    "embedding-dim": 8,
    "local-epochs": 1,
    "batch-users": 20,
    "privacy-unit": "user",
    "target-epsilon": 4.0,
    "target-delta": 1e-4,
    "min-nodes": 3,
}
SOURCE = DataSource(synthetic=SyntheticSpec(num_merchants=3, num_users=300, num_items=60, seed=4))


def _run(root, *, secagg: bool):
    log_dir = root / f"replies-{secagg}"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=parse_run_config({**SETTINGS, "secagg": secagg}),
        source=SOURCE,
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / f"run-{secagg}",
        baselines=False,
    )
    simulate(spec, client_mods=[recording_mod(log_dir)])
    replies = [json.loads(p.read_text()) | {"stem": p.stem} for p in sorted(log_dir.glob("*.json"))]
    return root / f"run-{secagg}", replies


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("secagg")
    return _run(root, secagg=False), _run(root, secagg=True)


def test_the_secure_aggregate_equals_the_plain_one_within_the_quantisation_error(runs):
    (plain_dir, _), (secure_dir, _) = runs
    plain = torch.load(plain_dir / "global_model.pt")
    secure = torch.load(secure_dir / "global_model.pt")
    assert set(plain) == set(secure) == set(SHARED)
    # SecAgg+ quantises each delta to 2 x 8 / 2^22 = 3.8e-6 with unbiased rounding, per round.
    worst = max(float((plain[n] - secure[n]).abs().max()) for n in SHARED)
    assert worst < 2e-5, worst
    moved = max(float((plain[n]).abs().max()) for n in SHARED)
    assert moved > 1e-3  # the models are not trivially equal (both trained)


def test_with_secagg_no_train_reply_carries_an_individual_update(runs):
    (_, plain_replies), (_, secure_replies) = runs

    def train_arrays(replies):
        return [
            sum(1 for k in r["arrays"] if k.startswith(ARRAYS_KEY + "/"))
            for r in replies
            if "-train-" in r["stem"] and MERCHANT_KEY in r["configs"]
        ]

    assert train_arrays(plain_replies) and all(
        n == len(SHARED) for n in train_arrays(plain_replies)
    )
    masked = train_arrays(secure_replies)
    assert len(masked) == 6 and all(n == 0 for n in masked)  # 3 merchants x 2 rounds
    # The merchants' privacy reports and ledger entries still arrive in clear.
    secure_train = [
        r for r in secure_replies if MERCHANT_KEY in r["configs"] and "-train-" in r["stem"]
    ]
    assert all(float(r["metrics"]["metrics"]["dp-epsilon"]) > 0 for r in secure_train)


def test_the_ledger_says_secagg_and_verifies(runs):
    (_, _), (secure_dir, _) = runs
    verdict = verify_path(secure_dir)
    assert verdict.ok, [p.render() for p in verdict.problems]
    entries = read_ledger(secure_dir / "merchants" / "merchant-00" / "ledger.jsonl").entries
    sgd = [e.body for e in entries if e.kind == "commit" and e.body.get("release") == "dp-sgd"]
    assert len(sgd) == 2 and all(body["secagg"] is True for body in sgd)
    counts = [
        e.body for e in entries if e.kind == "commit" and e.body.get("release") == "item-counts"
    ]
    assert counts and counts[0]["secagg"] is False
