"""The round loop with poisoned replies: rejected, recorded, ledgered; the model stays finite.

A fake transport answers the coordinator's real messages (Flower's own FedAvg
builds them) with scripted merchants: two honest ones and several bad ones
(NaN, Inf, 1e6 values with weight 1e6, a broken compressed update, bad weights).
The global model must equal the mean of the honest updates exactly: uniform
under DP, weighted by num-examples without.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

import server.rounds.secagg as secagg
import server.rounds.train as train_phase
from common.config import FederationConfig, RoundPlan, SecAggConfig, TrainConfig
from common.constants import (
    ARRAYS_KEY,
    COMPRESSION_FIELD,
    MERCHANT_KEY,
    MERCHANT_NAME_FIELD,
    METRICS_KEY,
    WEIGHT_KEY,
)
from common.privacy.config import PrivacyConfig
from common.privacy.verify import verify_federation
from server.ledger import AGGREGATE_SCOPE, UPDATE_REJECTED, FederationLedger
from server.rounds import transport
from server.rounds.checkpoint import Checkpoint, load_checkpoint
from server.rounds.loop import RoundLoop, run_federation
from server.rounds.records import FederationError, FederationResult, RunOptions
from server.strategy import build_strategy

Arrays = dict[str, np.ndarray]
Behaviour = Callable[[Arrays], tuple[Any, Any]]  # global arrays -> (reply arrays, weight)

GLOBAL: Arrays = {
    "item_embedding.weight": (np.arange(12, dtype=np.float32).reshape(6, 2) - 6) / 10,
    "item_bias.weight": np.linspace(-0.5, 0.5, 6, dtype=np.float32).reshape(6, 1),
}
USER_DP = PrivacyConfig(unit="user", target_epsilon=3.0, delta=1e-6, count_share=0.0, local_steps=5)


def honest_a(g: Arrays) -> tuple[Any, Any]:
    return {n: a + np.float32(0.01) for n, a in g.items()}, 3


def honest_b(g: Arrays) -> tuple[Any, Any]:
    return {
        "item_embedding.weight": g["item_embedding.weight"] - np.float32(0.03),
        "item_bias.weight": g["item_bias.weight"] + np.float32(0.02),
    }, 1


def with_nan(g: Arrays) -> tuple[Any, Any]:
    out, _ = honest_a(g)
    out["item_embedding.weight"][[1, 4], 0] = np.nan
    return out, 1


def with_inf(g: Arrays) -> tuple[Any, Any]:
    out, _ = honest_a(g)
    out["item_bias.weight"][2, 0] = np.inf
    return out, 1


def huge(g: Arrays) -> tuple[Any, Any]:
    return {n: np.full_like(a, 1e6) for n, a in g.items()}, 1_000_000


def _arrays(message: Message) -> Arrays:
    return {n: a.numpy() for n, a in message.content.array_records[ARRAYS_KEY].items()}


class Federation:
    """Scripted merchants behind a fake transport; it keeps every model it sent."""

    def __init__(self, merchants: dict[str, Behaviour], *, broken: frozenset[str] = frozenset()):
        self.names = dict(enumerate(sorted(merchants), start=1))  # node id -> name
        self.merchants = merchants
        self.broken = broken  # these declare an int8 update and send something else
        self.sent: list[tuple[str, Arrays]] = []  # (message type, global arrays) per message
        self.grid = SimpleNamespace(get_node_ids=lambda: list(self.names))

    def reply(self, message: Message) -> Message:
        name = self.names[message.metadata.dst_node_id]
        arrays = _arrays(message)
        kind = message.metadata.message_type
        self.sent.append((kind, arrays))
        fields: dict[str, Any] = {MERCHANT_NAME_FIELD: name}
        if kind == "evaluate":
            metrics = MetricRecord({WEIGHT_KEY: 1, "hr@10": 0.5})
            content = RecordDict({METRICS_KEY: metrics, MERCHANT_KEY: ConfigRecord(fields)})
            return Message(content=content, reply_to=message)
        update, weight = self.merchants[name](arrays)
        if name in self.broken:
            fields[COMPRESSION_FIELD] = "int8"
        content = RecordDict(
            {
                ARRAYS_KEY: ArrayRecord({n: Array(np.asarray(a)) for n, a in update.items()}),
                METRICS_KEY: MetricRecord({WEIGHT_KEY: weight, "train-steps": 5}),
                MERCHANT_KEY: ConfigRecord(fields),
            }
        )
        return Message(content=content, reply_to=message)

    def run(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        *,
        privacy: PrivacyConfig,
        rounds: int = 1,
        options: dict[str, Any] | None = None,
        **federation_settings: Any,
    ) -> tuple[FederationResult, FederationLedger]:
        for attribute in ("_run_id", "_node_id", "_task_id"):
            monkeypatch.setattr(TaskIdentity, attribute, 1)
        monkeypatch.setattr(
            transport,
            "send_and_receive",
            lambda grid, messages, **_: [self.reply(m) for m in messages],
        )
        config = FederationConfig(
            num_rounds=rounds,
            min_nodes=len(self.names),
            round_timeout=5.0,
            node_wait_timeout=5.0,
            **federation_settings,
        )
        train = TrainConfig()
        ledger = FederationLedger(tmp_path / "ledger", run="t", key_path=tmp_path / "c.key")
        result = run_federation(
            self.grid,  # type: ignore[arg-type]
            build_strategy(config, train, num_nodes=len(self.names)),
            ArrayRecord({n: Array(a.copy()) for n, a in GLOBAL.items()}),
            federation=config,
            plan=RoundPlan(train=train, privacy=privacy, num_rounds=rounds),
            ledger=ledger,
            options=RunOptions(checkpoint=tmp_path / "checkpoint.npz", poll=0.0, **(options or {})),
        )
        return result, ledger


def _model(result: FederationResult) -> Arrays:
    return {n: a.numpy() for n, a in result.arrays.items()}


def _rejections(ledger: FederationLedger) -> dict[str, str]:
    return {
        str(e.body["merchant"]): str(e.body["reason"]) for e in ledger.ledger.find(UPDATE_REJECTED)
    }


def test_under_dp_bad_replies_are_rejected_and_the_model_is_the_uniform_mean_of_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation(
        {
            "a-honest": honest_a,  # reports weight 3: ignored under DP
            "b-honest": honest_b,
            "c-nan": with_nan,
            "d-inf": with_inf,
            "e-huge": huge,
            "f-broken": honest_a,
        },
        broken=frozenset({"f-broken"}),
    )
    result, ledger = fed.run(tmp_path, monkeypatch, privacy=USER_DP)

    record = result.rounds[0]
    assert record.aggregated and sorted(record.train) == ["a-honest", "b-honest"]
    # Uniform mean: item embeddings (+0.01 - 0.03) / 2 = -0.01; item biases (0.01 + 0.02) / 2.
    model = _model(result)
    assert model["item_embedding.weight"].ravel().tolist() == pytest.approx(
        (GLOBAL["item_embedding.weight"] - 0.01).ravel().tolist(), abs=1e-6
    )
    assert model["item_bias.weight"].ravel().tolist() == pytest.approx(
        (GLOBAL["item_bias.weight"] + 0.015).ravel().tolist(), abs=1e-6
    )
    # The bound: 1.05 x lr 0.02 x sqrt(18) x S(5 steps) 5.022 = 0.4475 (local-steps=5).
    huge_norm = np.sqrt(sum(((1e6 - a.astype(np.float64)) ** 2).sum() for a in GLOBAL.values()))
    expected = {
        "c-nan": "non-finite values in item_embedding.weight (2 NaN)",
        "d-inf": "non-finite values in item_bias.weight (1 Inf)",
        "e-huge": f"update norm {huge_norm:.4g} > bound 0.4475",
    }
    rejections = _rejections(ledger)
    assert {k: rejections[k] for k in expected} == expected
    assert rejections["f-broken"].startswith("undecodable update (a int8-compressed update")
    assert record.failures == [
        f"{name}: update rejected: {rejections[name]}" for name in sorted(rejections)
    ]
    assert {e.body["scope"] for e in ledger.ledger.find(UPDATE_REJECTED)} == {"merchant"}
    # Nothing non-finite was checkpointed or sent back; the ledger still verifies.
    checkpoint = load_checkpoint(tmp_path / "checkpoint.npz")
    assert checkpoint is not None
    for name, array in checkpoint.arrays.items():
        np.testing.assert_array_equal(array, model[name])
    evaluated = [arrays for kind, arrays in fed.sent if kind == "evaluate"]
    assert len(evaluated) == 6
    assert all(np.isfinite(a).all() for arrays in evaluated for a in arrays.values())
    assert verify_federation(tmp_path / "ledger" / "federation.jsonl").ok


def test_without_dp_weights_are_checked_and_the_model_is_the_weighted_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def weight(value: Any) -> Behaviour:
        return lambda g: (honest_a(g)[0], value)

    fed = Federation(
        {
            "a-honest": honest_a,  # weight 3
            "b-honest": honest_b,  # weight 1
            "c-nan": with_nan,
            "e-huge": huge,  # weight 1e6 > max-merchant-examples 1000, and norm
            "g-fraction": weight(2.5),
            "h-zero": weight(0),
            "i-nan-weight": weight(float("nan")),
        }
    )
    result, ledger = fed.run(
        tmp_path, monkeypatch, privacy=PrivacyConfig(), max_merchant_examples=1000
    )
    record = result.rounds[0]
    assert record.aggregated and sorted(record.train) == ["a-honest", "b-honest"]
    # Weighted 3:1: embeddings (3 x 0.01 - 0.03) / 4 = 0; biases (3 x 0.01 + 0.02) / 4 = 0.0125.
    model = _model(result)
    assert model["item_embedding.weight"].ravel().tolist() == pytest.approx(
        GLOBAL["item_embedding.weight"].ravel().tolist(), abs=1e-6
    )
    assert model["item_bias.weight"].ravel().tolist() == pytest.approx(
        (GLOBAL["item_bias.weight"] + 0.0125).ravel().tolist(), abs=1e-6
    )
    rejections = _rejections(ledger)
    assert sorted(rejections) == ["c-nan", "e-huge", "g-fraction", "h-zero", "i-nan-weight"]
    assert rejections["e-huge"].startswith("num-examples 1e+06 > max-merchant-examples 1000; ")
    assert "update norm" in rejections["e-huge"]
    assert rejections["g-fraction"] == "num-examples 2.5 is not a finite integer"
    assert rejections["h-zero"] == "num-examples 0 is not positive"
    assert rejections["i-nan-weight"] == "num-examples nan is not a finite integer"


def test_when_every_reply_is_rejected_the_model_stays_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation({"c-nan": with_nan, "d-inf": with_inf, "e-huge": huge})
    result, ledger = fed.run(tmp_path, monkeypatch, privacy=USER_DP, rounds=2)

    assert [r.aggregated for r in result.rounds] == [False, False]
    assert not result.stopped_early
    for name, array in _model(result).items():
        np.testing.assert_array_equal(array, GLOBAL[name])
    assert len(ledger.ledger.find(UPDATE_REJECTED)) == 6  # 3 merchants x 2 rounds
    assert all(len(r.failures) == 3 for r in result.rounds)
    checkpoint = load_checkpoint(tmp_path / "checkpoint.npz")
    assert checkpoint is not None and checkpoint.completed_round == 2
    for name, array in checkpoint.arrays.items():
        np.testing.assert_array_equal(array, GLOBAL[name])
    for _, arrays in fed.sent:  # every model sent (train and evaluate) is the initial one
        for name, array in arrays.items():
            np.testing.assert_array_equal(array, GLOBAL[name])


def test_a_secagg_aggregate_outside_the_clipping_range_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed = Federation({"a-honest": honest_a, "b-honest": honest_b, "c-other": honest_a})
    mean_delta = iter([9.0, 0.01])  # round 1: a lied about its weight; round 2: fine

    def fake_secure_round(grid: Any, context: Any, *, nodes: list[int], arrays: Any, **_: Any):
        replies = []
        for node in nodes:
            instruction = Message(
                content=RecordDict({ARRAYS_KEY: arrays}), dst_node_id=node, message_type="train"
            )
            replies.append(fed.reply(instruction))
        delta = np.float32(next(mean_delta))
        return secagg.SecAggRound(
            arrays=ArrayRecord({n: Array(a.numpy() + delta) for n, a in arrays.items()}),
            replies=replies,
        )

    monkeypatch.setattr(secagg, "secure_train_round", fake_secure_round)
    result, ledger = fed.run(
        tmp_path,
        monkeypatch,
        privacy=USER_DP,
        rounds=2,
        options={"secagg": SecAggConfig(enabled=True), "context": object()},
    )
    first, second = result.rounds
    assert not first.aggregated and second.aggregated
    entries = ledger.ledger.find(UPDATE_REJECTED)
    assert [(e.body["round"], e.body["scope"]) for e in entries] == [(1, AGGREGATE_SCOPE)]
    assert str(entries[0].body["reason"]).startswith(
        "mean delta value 9 outside +-secagg-clip-range 8"
    )
    assert first.failures == [f"aggregate: update rejected: {entries[0].body['reason']}"]
    for name, array in _model(result).items():  # only round 2's mean delta was applied
        assert array.ravel().tolist() == pytest.approx((GLOBAL[name] + 0.01).ravel().tolist())


def test_a_rejected_aggregate_is_not_applied_and_fedadam_keeps_its_moments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever makes an aggregate unacceptable, the round is dropped, not the run."""
    fed = Federation({"a-honest": honest_a, "b-honest": honest_b})
    result, _ = fed.run(tmp_path / "ok", monkeypatch, privacy=PrivacyConfig(), strategy="fedadam")
    assert result.rounds[0].aggregated
    kept = load_checkpoint(tmp_path / "ok" / "checkpoint.npz")
    assert kept is not None and set(kept.strategy) == {"m_t", "v_t"}  # FedAdam moved

    monkeypatch.setattr(train_phase, "check_global", lambda arrays, reference: "forced")
    result, ledger = fed.run(
        tmp_path / "bad", monkeypatch, privacy=PrivacyConfig(), strategy="fedadam"
    )
    record = result.rounds[0]
    assert not record.aggregated and sorted(record.train) == ["a-honest", "b-honest"]
    assert record.failures == ["aggregate: update rejected: forced"]
    for name, array in _model(result).items():
        np.testing.assert_array_equal(array, GLOBAL[name])
    dropped = load_checkpoint(tmp_path / "bad" / "checkpoint.npz")
    assert dropped is not None and dropped.strategy == {}  # moments as before the round
    [entry] = ledger.ledger.find(UPDATE_REJECTED)
    assert entry.body["scope"] == AGGREGATE_SCOPE and entry.body["merchant"] == ""


def test_a_checkpoint_holding_a_non_finite_model_is_not_resumed() -> None:
    broken = {n: a.copy() for n, a in GLOBAL.items()}
    broken["item_bias.weight"][0, 0] = np.nan
    checkpoint = Checkpoint(run_name="old", completed_round=3, config={}, arrays=broken)
    strategy = build_strategy(FederationConfig(), TrainConfig(), num_nodes=2)
    loop = RoundLoop(
        None,  # type: ignore[arg-type]
        strategy,
        ArrayRecord(),
        federation=FederationConfig(),
        plan=RoundPlan(train=TrainConfig(), privacy=PrivacyConfig(), num_rounds=1),
    )
    with pytest.raises(FederationError, match=r"old after round 3 holds a broken global model"):
        loop.resume(checkpoint)


def test_fedavgm_steps_with_its_velocity_and_a_rejected_aggregate_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mean delta per round: 0 on the embedding ((3 x 0.01 - 0.03) / 4), 0.0125 on the bias."""
    fed = Federation({"a-honest": honest_a, "b-honest": honest_b})
    settings = {"strategy": "fedavgm", "fedavgm_learning_rate": 2.0, "fedavgm_momentum": 0.5}
    result, _ = fed.run(tmp_path / "ok", monkeypatch, privacy=PrivacyConfig(), rounds=2, **settings)
    # round 1: velocity 0.0125, step 2 x 0.0125; round 2: velocity 0.5 x 0.0125 + 0.0125
    moved = _model(result)["item_bias.weight"] - GLOBAL["item_bias.weight"]
    np.testing.assert_allclose(moved, 2 * 0.0125 + 2 * 0.01875, rtol=1e-4)
    kept = load_checkpoint(tmp_path / "ok" / "checkpoint.npz")
    assert kept is not None and set(kept.strategy) == {"momentum_vector"}

    real_check = train_phase.check_global
    calls = iter(["forced", None])
    monkeypatch.setattr(
        train_phase,
        "check_global",
        lambda arrays, reference: next(calls) or real_check(arrays, reference),
    )
    result, _ = fed.run(
        tmp_path / "bad", monkeypatch, privacy=PrivacyConfig(), rounds=2, **settings
    )
    assert [r.aggregated for r in result.rounds] == [False, True]
    # Round 2 alone: velocity 0.0125 measured from the unchanged model, as if round 1 never was.
    moved = _model(result)["item_bias.weight"] - GLOBAL["item_bias.weight"]
    np.testing.assert_allclose(moved, 2 * 0.0125, rtol=1e-4)
