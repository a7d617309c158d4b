"""A real private simulation (Ray): budgets, refusals, a clean early end, and what leaves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.config import parse_run_config
from common.constants import ARRAYS_KEY, ITEM_COUNTS_KEY, LEDGER_KEY, MERCHANT_KEY, METRICS_KEY
from common.data.partition import PartitionConfig
from common.privacy.accountant import plan_privacy
from common.privacy.accounting import PrivacyEvent, epsilon_of
from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_path
from simulations.merchants import prepare_merchants
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec, generate_federation
from tests.integration.test_simulation import SHARED, recording_mod

pytestmark = pytest.mark.integration

SETTINGS = {
    "num-server-rounds": 5,
    "embedding-dim": 8,
    "local-epochs": 1,
    "batch-users": 20,
    "privacy-unit": "user",
    "target-epsilon": 4.0,
    "target-delta": 1e-4,
    "min-train-nodes": 2,
}
SOURCE = DataSource(synthetic=SyntheticSpec(num_merchants=3, num_users=360, num_items=80, seed=2))
DP_METRICS = {
    "num-examples",
    "train-steps",
    "train-seconds",
    "client-seconds",
    "client-startup-seconds",
    "dp-clipped-fraction",
    "dp-epsilon",
    "dp-delta",
    "dp-epsilon-max",
    "dp-noise-multiplier",
    "dp-count-noise-multiplier",
    "dp-max-grad-norm",
    "dp-sample-rate",
    "dp-steps",
    "dp-refused",
    "eval-users",
    "eval-seconds",
    "auc",
    "hr@10",
    "ndcg@10",
    "recall@10",
    "sampled-hr@10",
    "sampled-ndcg@10",
}


def _epsilon_after(run, data, rounds):
    """What a merchant will have spent after the count release and ``rounds`` rounds."""
    from client.training.private import private_population

    plan = plan_privacy(
        run.privacy,
        population=len(private_population(data, "user")),
        batch=run.train.batch_users,
        local_epochs=run.train.local_epochs,
        rounds=run.federation.num_rounds,
    )
    events = [
        PrivacyEvent(plan.count_noise_multiplier, 1.0, 1),
        PrivacyEvent(plan.noise_multiplier, plan.sample_rate, rounds * plan.steps_per_round),
    ]
    return epsilon_of(events, delta=run.privacy.delta, accountant="rdp")


@pytest.fixture(scope="module")
def private_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("private")
    run = parse_run_config(SETTINGS)
    _, merchants = prepare_merchants(
        generate_federation(SOURCE.synthetic), PartitionConfig(scheme="natural"), root / "dry"
    )
    # merchant-00 can afford 2 rounds, merchant-01 three, merchant-02 all five.
    budgets = {
        "merchant-00": 0.5 * sum(_epsilon_after(run, merchants["merchant-00"], r) for r in (2, 3)),
        "merchant-01": 0.5 * sum(_epsilon_after(run, merchants["merchant-01"], r) for r in (3, 4)),
    }
    log_dir = root / "replies"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=run,
        source=SOURCE,
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / "run",
        merchant_budgets=budgets,
    )
    rounds = []
    results = simulate(spec, on_round=rounds.append, client_mods=[recording_mod(log_dir)])
    replies = [json.loads(p.read_text()) | {"stem": p.stem} for p in sorted(log_dir.glob("*.json"))]
    return root / "run", results, rounds, replies, budgets, run, merchants


def _by_merchant(replies, name):
    return [r for r in replies if r["configs"][MERCHANT_KEY]["name"] == name]


def test_refusing_merchants_are_left_out_and_the_run_ends_cleanly(private_run):
    run_dir, results, rounds, _, _, _, _ = private_run
    assert [r.round for r in rounds] == [1, 2, 3, 4]  # round 5 never started
    assert sorted(rounds[2].refused) == ["merchant-00"] and sorted(rounds[2].train) == [
        "merchant-01",
        "merchant-02",
    ]
    assert sorted(rounds[3].refused) == ["merchant-01"] and list(rounds[3].train) == ["merchant-02"]
    assert rounds[2].aggregated and not rounds[3].aggregated
    assert "fewer than min-train-nodes=2" in results["privacy"]["stopped_early"]
    assert len(rounds[3].evaluate) == 3  # the run still evaluates and writes its results
    assert (run_dir / "metrics.json").is_file() and (run_dir / "item_prior.npz").is_file()
    assert "dp-popularity" in results


def test_no_update_from_a_refusing_merchant_is_aggregated(private_run):
    run_dir, _, _, replies, _, _, _ = private_run
    train = [r for r in replies if "-train-" in r["stem"]]
    zero = _by_merchant(train, "merchant-00")
    # Two updates, one refusal (no arrays), then never asked again.
    assert [bool(r["arrays"]) for r in zero] == [True, True, False]
    assert zero[-1]["metrics"][METRICS_KEY]["dp-refused"] == 1
    # The final model is the uniform mean of round 3's two updates: neither merchant-00's
    # refusal round nor merchant-02's lone round-4 update was aggregated.
    round3 = [_by_merchant(train, m)[2] for m in ("merchant-01", "merchant-02")]
    final = torch.load(run_dir / "global_model.pt")
    for name in SHARED:
        stacks = []
        for reply in round3:
            with np.load(
                next(run_dir.parent.joinpath("replies").glob(f"{reply['stem']}.npz"))
            ) as arrays:
                stacks.append(arrays[f"{ARRAYS_KEY}__{name}"])
        np.testing.assert_allclose(final[name].numpy(), np.mean(stacks, axis=0), atol=1e-6)


def test_reported_epsilon_stays_within_each_budget(private_run):
    _, results, _, _, budgets, run, merchants = private_run
    per = results["privacy"]["per_merchant"]
    for name, budget in budgets.items():
        assert per[name]["dp-epsilon"] <= budget
    expected = _epsilon_after(run, merchants["merchant-02"], 4)
    assert per["merchant-02"]["dp-epsilon"] == pytest.approx(expected, rel=0.01)
    assert per["merchant-02"]["privacy-unit"] == "user"
    assert per["merchant-02"]["accountant"] == "rdp"


def test_private_replies_carry_only_shared_parameters_counts_and_dp_metrics(private_run):
    _, _, _, replies, _, _, _ = private_run
    for reply in replies:
        allowed = {ARRAYS_KEY, ITEM_COUNTS_KEY, METRICS_KEY, MERCHANT_KEY, LEDGER_KEY}
        assert set(reply["records"]) <= allowed
        assert set(reply["configs"].get(LEDGER_KEY, {"entries": 1})) == {"entries"}
        assert set(reply["metrics"][METRICS_KEY]) <= DP_METRICS  # no loss, no user counts
        for key in reply["arrays"]:
            record, name = key.split("/", 1)
            assert (record, name) in {(ARRAYS_KEY, n) for n in SHARED} | {
                (ITEM_COUNTS_KEY, "counts")
            }


def test_the_run_ledger_verifies_and_records_every_release_and_refusal(private_run):
    run_dir, _, _, _, budgets, _, _ = private_run
    verdict = verify_path(run_dir)
    assert verdict.ok, [p.render() for p in verdict.problems]
    assert set(verdict.parties) == {"coordinator", "merchant-00", "merchant-01", "merchant-02"}
    assert verdict.notes == []  # every reservation committed; the run closed
    zero = read_ledger(run_dir / "merchants" / "merchant-00" / "ledger.jsonl").entries
    kinds = [(e.kind, e.body.get("round"), e.body.get("release")) for e in zero]
    assert kinds[:7] == [
        ("genesis", None, None),
        ("reserve", 0, "item-counts"),
        ("commit", 0, "item-counts"),
        ("reserve", 1, "dp-sgd"),
        ("commit", 1, "dp-sgd"),
        ("reserve", 2, "dp-sgd"),
        ("commit", 2, "dp-sgd"),
    ]
    assert kinds[7] == ("refusal", 3, "dp-sgd")
    assert kinds[8:] == [("non-dp-release", 4, "evaluation-metrics")]
    committed = [e.body for e in zero if e.kind == "commit"]
    assert committed[-1]["epsilon_max"] == pytest.approx(budgets["merchant-00"])
    assert committed[-1]["epsilon_rdp"] <= budgets["merchant-00"]
    assert 0 < committed[-1]["epsilon_prv"] <= committed[-1]["epsilon_rdp"] * 1.01
    fed = read_ledger(run_dir / "ledger" / "federation.jsonl").entries
    assert [e.kind for e in fed][-1] == "close"
    assert [e.body["round"] for e in fed if e.kind == "round-head"] == [1, 2, 3, 4]
    received = [e.body for e in fed if e.kind == "merchant-entries"]
    assert all(not body["problems"] for body in received)  # hashes of updates matched


def test_the_run_directory_holds_no_signing_key_and_the_keys_are_gone(private_run):
    run_dir = private_run[0]
    pems = [p for p in run_dir.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()]
    assert pems == []  # nobody given the directory can re-sign its ledgers
    assert not any(".keys-" in p.name for p in run_dir.parent.iterdir())  # removed at the end
    fed = read_ledger(run_dir / "ledger" / "federation.jsonl").entries
    coordinator = fed[0].body["public_key"]  # yet every ledger verifies under its genesis key
    for name in ("merchant-00", "merchant-01", "merchant-02"):
        # each merchant holds the coordinator's signed acknowledgement of its head
        kept = json.loads((run_dir / "merchants" / name / "ledger.countersigned.json").read_text())
        assert kept["coordinator"]["public_key"] == coordinator and kept["seq"] > 0


def test_a_cut_merchant_ledger_is_caught_by_the_federation_copy(private_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(private_run[0], run_dir)
    path = run_dir / "merchants" / "merchant-01" / "ledger.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))
    (path.parent / "ledger.head.json").unlink()  # even without its signed head
    problems = verify_path(run_dir).problems
    assert any(p.kind == "truncated" and "coordinator recorded" in p.message for p in problems)


def test_each_merchant_chose_what_it_serves_kept_it_home_and_recommend_follows(
    private_run, tmp_path
):
    from common.source_choice import SOURCES, shared_fingerprint
    from simulations.recommend import recommend_run

    run_dir, results, _, replies, _, _, merchants = private_run
    shared = torch.load(run_dir / "global_model.pt", weights_only=True)
    fingerprint = shared_fingerprint({n: t.numpy() for n, t in shared.items()})
    sources = results["served"]["sources"]
    assert set(sources) == set(merchants)
    for name, data in merchants.items():
        saved = json.loads((run_dir / "merchants" / name / "serving_source.json").read_text())
        assert saved["model"] == fingerprint  # measured on the final global model
        assert saved["source"] in SOURCES and sources[name]["source"] == saved["source"]
        held_out = int((np.diff(data.train_indptr) >= 2).sum())  # last training item each
        assert saved["held_out"] == held_out > 0
        assert sources[name]["reason"].startswith("serves ")
    served = results["served"]["overall"]
    assert served["eval-users"] == results["federated"]["overall"]["eval-users"]
    # the choice and its figures never left: no reply names it
    assert not any("serving" in json.dumps(r["metrics"]) for r in replies)
    out = recommend_run(run_dir, k=5, out=tmp_path / "recs.csv")
    assert out.sources == {n: s["reason"] for n, s in sources.items()}
