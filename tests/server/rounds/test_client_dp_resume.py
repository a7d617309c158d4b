"""Client-level DP across a coordinator restart: the account is checkpointed, restored and ledgered.

The round loop runs against scripted devices (the fake transport of
``test_bad_updates``). A run stopped after round 1 and resumed must end with
the same epsilon, from the same number of releases, as the uninterrupted
run; every noised aggregate is in the federation ledger, where ``verify``
recomputes it; a release written to the ledger but not yet checkpointed is
still counted after the resume.
"""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp
from flwr.app import Array, ArrayRecord
from flwr.supercore.task_identity import TaskIdentity

import server.rounds.loop as round_loop
from common.config import FederationConfig, RoundPlan, TrainConfig
from common.errors import ConfigError
from common.privacy.config import PrivacyConfig
from common.privacy.ledger import CLIENT_DP_RELEASE, Ledger, read_ledger
from common.privacy.signing import Signer
from common.privacy.verify import verify_federation
from server.client_privacy import ClientDP, build_client_dp
from server.ledger import FederationLedger
from server.rounds import transport
from server.rounds.checkpoint import load_checkpoint
from server.rounds.loop import run_federation
from server.rounds.records import FederationResult, RunOptions
from server.strategy import build_strategy
from tests.server.rounds.test_bad_updates import GLOBAL, Arrays, Federation

CLIENT_DP = PrivacyConfig(unit="client", target_epsilon=4.0, delta=1e-3, client_clip=0.5)
ROUNDS = 3


def same_weight(g: Arrays) -> tuple[Arrays, int]:
    return {n: a + np.float32(0.01) for n, a in g.items()}, 1


class Stop(Exception):
    """The coordinator is killed."""


def _run(
    run: Path, monkeypatch: pytest.MonkeyPatch, *, stop_after: int = 0, resume: bool = False
) -> tuple[FederationResult, ClientDP]:
    fed = Federation({"device-a": same_weight, "device-b": same_weight, "device-c": same_weight})
    for attribute in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attribute, 1)
    monkeypatch.setattr(
        transport, "send_and_receive", lambda grid, messages, **_: [fed.reply(m) for m in messages]
    )
    config = FederationConfig(
        num_rounds=ROUNDS, min_nodes=3, round_timeout=5.0, node_wait_timeout=5.0
    )
    checkpoint = load_checkpoint(run / "checkpoint.npz") if resume else None
    client_dp = build_client_dp(
        build_strategy(config, TrainConfig(), num_nodes=3),
        CLIENT_DP,
        rounds=ROUNDS,
        sampled=3,
        population=3,
        restore=checkpoint.client_privacy if checkpoint is not None else None,
    )

    def killed(record) -> None:
        if record.round == stop_after:
            raise Stop

    result = run_federation(
        fed.grid,  # type: ignore[arg-type]
        client_dp.strategy,
        ArrayRecord({n: Array(a.copy()) for n, a in GLOBAL.items()}),
        federation=config,
        plan=RoundPlan(train=TrainConfig(), privacy=CLIENT_DP, num_rounds=ROUNDS),
        on_round=killed,
        client_dp=client_dp,
        ledger=FederationLedger(run / "ledger", run="r", key_path=run.parent / f"{run.name}.key"),
        options=RunOptions(checkpoint=run / "checkpoint.npz", poll=0.0, resume=checkpoint),
    )
    return result, client_dp


def _releases(run: Path) -> list[dict]:
    entries = read_ledger(run / "ledger" / "federation.jsonl").entries
    return [e.body for e in entries if e.kind == CLIENT_DP_RELEASE]


def test_epsilon_after_a_resume_equals_the_uninterrupted_runs(tmp_path, monkeypatch):
    whole, _ = _run(tmp_path / "whole", monkeypatch)
    with pytest.raises(Stop):
        _run(tmp_path / "cut", monkeypatch, stop_after=1)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.npz").client_privacy["accountant"]
    resumed, client_dp = _run(tmp_path / "cut", monkeypatch, resume=True)

    assert resumed.resumed_from == 1
    assert whole.client_privacy["releases"] == resumed.client_privacy["releases"] == ROUNDS
    assert resumed.client_privacy["epsilon"] == pytest.approx(
        whole.client_privacy["epsilon"], rel=1e-12
    )
    # ... and equal to three Gaussian releases at the run's sigma, composed independently
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(client_dp.noise_multiplier), ROUNDS)
    assert resumed.client_privacy["epsilon"] == pytest.approx(accountant.get_epsilon(1e-3))
    assert 3.9 < resumed.client_privacy["epsilon"] <= 4.0
    # Each noised aggregate is in the ledger, once, and the ledger verifies.
    for run in ("whole", "cut"):
        bodies = _releases(tmp_path / run)
        assert [(b["round"], b["releases"]) for b in bodies] == [(1, 1), (2, 2), (3, 3)]
        assert bodies[-1]["epsilon"] == pytest.approx(whole.client_privacy["epsilon"])
        assert all(b["published"] and b["delta"] == 1e-3 for b in bodies)
        assert "no amplification" in bodies[0]["sampling"]
        verdict = verify_federation(tmp_path / run / "ledger" / "federation.jsonl")
        assert verdict.ok, [p.render() for p in verdict.problems]


def test_a_release_ledgered_but_not_checkpointed_is_still_counted(tmp_path, monkeypatch):
    saved = round_loop.save_checkpoint

    def crash_in_round_2(path, checkpoint):
        if checkpoint.completed_round == 2:
            raise Stop  # killed after round 2's release was written, before its checkpoint
        saved(path, checkpoint)

    monkeypatch.setattr(round_loop, "save_checkpoint", crash_in_round_2)
    with pytest.raises(Stop):
        _run(tmp_path / "run", monkeypatch)
    monkeypatch.setattr(round_loop, "save_checkpoint", saved)
    resumed, _ = _run(tmp_path / "run", monkeypatch, resume=True)
    # Round 2 runs again: its first release counts, so the budget (sigma was calibrated for
    # three releases) stops the run before a fourth.
    assert [(b["round"], b["releases"]) for b in _releases(tmp_path / "run")] == [
        (1, 1),
        (2, 2),
        (2, 3),
    ]
    assert resumed.client_privacy["releases"] == 3
    assert resumed.client_privacy["epsilon"] <= CLIENT_DP.target_epsilon
    assert resumed.stopped_early.startswith("round 3: The next private release would exceed")
    assert verify_federation(tmp_path / "run" / "ledger" / "federation.jsonl").ok


def test_an_understated_or_reset_client_epsilon_fails_verify(tmp_path, monkeypatch):
    _run(tmp_path / "run", monkeypatch)
    path = tmp_path / "run" / "ledger" / "federation.jsonl"
    signer = Signer.load_or_create(tmp_path / "run.key")  # the coordinator itself rewrites it
    for change, expected in (
        ({"epsilon": 0.5}, "is below the"),
        ({"releases": 1}, "says releases=1"),
    ):
        entries = read_ledger(path).entries
        rewritten = tmp_path / "rewritten" / "federation.jsonl"
        rewritten.parent.mkdir(exist_ok=True)
        for p in rewritten.parent.iterdir():
            p.unlink()
        ledger = Ledger.open(rewritten, signer=signer, party="coordinator", genesis=entries[0].body)
        third = [e for e in entries if e.kind == CLIENT_DP_RELEASE][2]
        for entry in entries[1:]:
            ledger.append(entry.kind, {**entry.body, **change} if entry is third else entry.body)
        verdict = verify_federation(rewritten)
        assert not verdict.ok
        first = verdict.first
        assert first is not None and first.kind == "client-epsilon" and expected in first.message


def test_a_checkpoint_without_a_client_account_is_not_resumed():
    strategy = build_strategy(FederationConfig(), TrainConfig(), num_nodes=3)
    with pytest.raises(ConfigError, match="would count epsilon from zero again"):
        build_client_dp(strategy, CLIENT_DP, rounds=3, sampled=3, population=3, restore={})


def test_the_audit_report_states_the_client_level_releases_and_checks_them(tmp_path, monkeypatch):
    import json

    from simulations.audit_report import report_digest, write_report
    from simulations.audit_report_check import verify_report

    whole, client_dp = _run(tmp_path / "run", monkeypatch)
    ledger = tmp_path / "run" / "ledger" / "federation.jsonl"
    report = write_report(ledger, tmp_path / "audit")
    level = report["client_level"]
    assert [r["releases"] for r in level["releases"]] == [1, 2, 3]
    epsilon = whole.client_privacy["epsilon"]
    assert f"epsilon = {epsilon:.4g} at delta = 0.001" in level["statement"]
    assert f"sigma = {client_dp.noise_multiplier:.4g}" in level["statement"]
    assert "3 of 3 clients per round" in level["statement"]
    html = (tmp_path / "audit" / "report.html").read_text()
    assert "coordinator (client-level DP)" in html
    path = tmp_path / "audit" / "report.json"
    assert verify_report(path).ok

    edited = json.loads(path.read_text())
    edited["client_level"]["releases"][-1]["epsilon"] = 0.5
    edited["digest"] = report_digest(edited)  # re-digested: only the ledgers can tell
    path.write_text(json.dumps(edited))
    first = verify_report(path).first
    assert first is not None and "client_level.releases[2].epsilon says 0.5" in first.message
