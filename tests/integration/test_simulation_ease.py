"""EASE from DP co-occurrence in a real Flower simulation (Ray): 2 merchants, one release each.

The coordinator sets the global model's items from the private item counts;
each merchant releases its noisy Gram of those items once (ledgered as
``item-gram``), the mean becomes the global model, and each merchant chooses
what it serves on its held-out items.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.config import parse_run_config
from common.data.partition import PartitionConfig
from common.privacy.records import GRAM_SAMPLING
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec
from tests.integration.test_simulation import recording_mod

pytestmark = pytest.mark.integration

SETTINGS = {
    "model": "ease",
    "ease-items": 30,
    "num-server-rounds": 1,
    "privacy-unit": "user",
    "target-epsilon": 4.0,
    "target-delta": 1e-4,
    "count-epsilon-share": 0.3,
}
MERCHANTS = ["merchant-00", "merchant-01"]


def _simulate(root, settings, *, baselines):
    """Two synthetic merchants under ``settings``: (run dir, results, rounds, replies dir)."""
    log_dir = root / "replies"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=parse_run_config(settings),
        source=DataSource(
            synthetic=SyntheticSpec(num_merchants=2, num_users=200, num_items=60, seed=3)
        ),
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / "run",
        baselines=baselines,
        num_cpus=1,
    )
    rounds: list = []
    results = simulate(spec, on_round=rounds.append, client_mods=[recording_mod(log_dir)])
    return root / "run", results, rounds, log_dir


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("ease-sim"), SETTINGS, baselines=False)


def test_one_release_per_merchant_becomes_the_global_gram_over_the_priors_items(finished_run):
    run_dir, results, rounds, _ = finished_run
    assert [r.round for r in rounds] == [1]
    assert sorted(rounds[0].train) == MERCHANTS and not rounds[0].failures
    model = torch.load(run_dir / "global_model.pt")
    assert set(model) == {"items", "gram", "noise"}
    items = model["items"].numpy()
    # the most counted items that clear item-threshold noise std, at most ease-items
    assert np.array_equal(items, np.rint(items)) and 10 <= len(np.unique(items)) == len(items) <= 30
    gram = model["gram"].numpy()
    assert gram.shape == (len(items), len(items))
    assert np.allclose(gram, gram.T) and np.abs(gram).sum() > 0
    with np.load(run_dir / "item_prior.npz") as prior:
        assert np.array_equal(prior["trained"], items.astype(np.int64))
    sigmas = []
    for spent in results["privacy"]["per_merchant"].values():
        assert 0.0 < spent["dp-epsilon"] <= SETTINGS["target-epsilon"] * (1 + 1e-9)
        sigmas.append(spent["dp-noise-multiplier"])
    # the mean Gram's noise per entry, from the two merchants' public sigmas
    assert float(model["noise"][0]) == pytest.approx(np.sqrt(np.sum(np.square(sigmas))) / 2)
    assert sorted(results["served"]["sources"]) == MERCHANTS  # each merchant chose what it serves


def test_the_ledger_states_the_release_its_sensitivity_and_what_was_sent(finished_run):
    run_dir, _, _, log_dir = finished_run
    for merchant in MERCHANTS:
        ledger = run_dir / "merchants" / merchant / "ledger.jsonl"
        entries = [json.loads(line) for line in ledger.read_text().splitlines()]
        grams = [e for e in entries if e["body"].get("release") == "item-gram"]
        assert [e["kind"] for e in grams] == ["reserve", "commit"]  # one release, then sent
        gram = grams[0]["body"]
        assert gram["model"] == "ease" and gram["unit"] == "user"
        assert gram["sampling"] == GRAM_SAMPLING and gram["max_grad_norm"] == 1.0
        assert gram["sample_rate"] == 1.0 and gram["steps"] == 1
        assert sorted(gram["released"]) == ["gram", "items", "noise"]
        assert gram["kept_local"] == []
    trains = sorted(log_dir.glob("*-train-*.json"))
    assert len(trains) == 2
    for path in trains:
        sent = json.loads(path.read_text())["arrays"]
        assert sorted(k.split("/", 1)[1] for k in sent) == ["gram", "items", "noise"]
        (size,) = sent[next(k for k in sent if k.endswith("/items"))]
        assert sent[next(k for k in sent if k.endswith("/gram"))] == [size, size]


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """The same federation with train-min-items above the catalog: it must train nothing
    (with the baselines, which for a statistics model are EASE^R and popularity)."""
    return _simulate(
        tmp_path_factory.mktemp("ease-untrained"),
        {**SETTINGS, "train-min-items": 1000},
        baselines=True,
    )


def test_too_few_cleared_items_top_up_the_counts_and_every_merchant_serves_dp_popularity(
    untrained_run,
):
    from simulations.audit_report import statement, summarize

    run_dir, results, rounds, log_dir = untrained_run
    assert [r.round for r in rounds] == [1] and rounds[0].train == {}  # evaluated, not trained
    assert sorted(rounds[0].evaluate) == MERCHANTS
    assert not sorted(log_dir.glob("*-train-*.json"))  # no training instruction was answered
    history = json.loads((run_dir / "federation.json").read_text())
    assert "train-min-items 1000" in history["stopped_early"]
    assert "2 merchant(s) were asked to spend the rest" in history["stopped_early"]
    # no pooled DP-SGD stand-in for a statistics model: EASE^R is its non-private counterpart
    assert "overall" in results["reference"] and "centralised" not in results
    assert "overall" in results["dp-popularity"]
    sources = results["served"]["sources"]
    assert sorted(sources) == MERCHANTS
    for source in sources.values():
        assert source["source"] == "popularity" and "trained no model" in source["reason"]
    for merchant in MERCHANTS:
        spent = results["privacy"]["per_merchant"][merchant]["dp-epsilon"]
        assert spent == pytest.approx(SETTINGS["target-epsilon"], rel=0.01)  # all of it, on counts
        ledger = run_dir / "merchants" / merchant / "ledger.jsonl"
        entries = [json.loads(line) for line in ledger.read_text().splitlines()]
        reserved = [e["body"]["release"] for e in entries if e["kind"] == "reserve"]
        assert reserved == ["item-counts", "item-counts-top-up"]
        choice = json.loads((run_dir / "merchants" / merchant / "serving_source.json").read_text())
        assert [w for w, _ in choice["ndcg"]] == [1.0]  # popularity was the only candidate
    from common.privacy.ledger import read_ledger

    (summary,) = summarize(
        {"m": read_ledger(run_dir / "merchants" / MERCHANTS[0] / "ledger.jsonl").entries}
    ).values()
    text = statement(summary)
    assert "2 release(s) of noisy item counts" in text and "topped up its noisy item counts" in text
