"""The merchant's run check: fedrec's own app, signed by the pinned operator key, within policy."""

from __future__ import annotations

import hashlib
import io
import json
import types
import zipfile
from pathlib import Path

import pytest

from client.deploy.run_guard import check_fab, check_run, install, pin_operator_key, record_refusal
from common.config import RunConfig, to_run_config
from common.constants import RUN_SIGNATURE_SETTING
from common.errors import ConfigError
from common.privacy.ledger import REFUSAL, read_ledger
from common.privacy.signing import Signer, key_fingerprint
from common.run_signature import RunRefused, sign_run
from server.ops.coordinator import CoordinatorDir
from server.ops.submit import write_app


def _fab(files: dict[str, bytes]) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as fab:
        for name, data in files.items():
            fab.writestr(name, data)
    content = buffer.getvalue()
    return content, hashlib.sha256(content).hexdigest()


@pytest.fixture(scope="module")
def fedrec_fab(tmp_path_factory) -> tuple[bytes, str]:
    from flwr.cli.build import build_fab_from_disk

    app = write_app(CoordinatorDir(tmp_path_factory.mktemp("coord")))
    content = build_fab_from_disk(app)
    return content, hashlib.sha256(content).hexdigest()


def _merchant(tmp_path: Path, operator: Signer) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "operator.pub").write_text(operator.public_key + "\n")
    return state


def _settings(operator: Signer, fab_hash: str, **changes: object) -> dict[str, object]:
    settings = {**to_run_config(RunConfig()), "privacy-unit": "user", "target-epsilon": 3.0}
    settings |= changes
    settings[RUN_SIGNATURE_SETTING] = sign_run(
        operator, run_name="weekly", fab_sha256=fab_hash, run_config=settings
    )
    return settings


def test_fedrecs_own_fab_passes_and_one_with_code_or_another_clientapp_is_refused(fedrec_fab):
    check_fab(*fedrec_fab)
    project = zipfile.ZipFile(io.BytesIO(fedrec_fab[0])).read("pyproject.toml")
    with pytest.raises(RunRefused, match=r"ships its own files \(evil.py\)"):
        check_fab(*_fab({"pyproject.toml": project, "evil.py": b"import os"}))
    other = project.replace(b'clientapp = "client.client_app:app"', b'clientapp = "evil:app"')
    with pytest.raises(RunRefused, match="names ClientApp 'evil:app'"):
        check_fab(*_fab({"pyproject.toml": other}))
    with pytest.raises(RunRefused, match="does not match its hash"):
        check_fab(fedrec_fab[0], "00" * 32)


def test_a_signed_run_within_policy_passes_and_the_rest_is_refused(tmp_path, fedrec_fab):
    operator = Signer.generate()
    state = _merchant(tmp_path, operator)
    content, fab_hash = fedrec_fab
    signed = check_run(
        state, run_config=_settings(operator, fab_hash), fab_content=content, fab_hash=fab_hash
    )
    assert signed.run_name == "weekly"
    open_run = _settings(operator, fab_hash, **{"privacy-unit": "off", "target-epsilon": 0.0})
    with pytest.raises(RunRefused, match="requires user-level DP"):
        check_run(state, run_config=open_run, fab_content=content, fab_hash=fab_hash)
    (state / "policy.json").write_text(json.dumps({"max-epsilon-per-run": 2.0}))
    with pytest.raises(RunRefused, match="limit of 2 per run"):
        check_run(
            state, run_config=_settings(operator, fab_hash), fab_content=content, fab_hash=fab_hash
        )
    forged = _settings(Signer.generate(), fab_hash)
    with pytest.raises(RunRefused, match="does not verify against the operator key pinned"):
        check_run(state, run_config=forged, fab_content=content, fab_hash=fab_hash)


def test_the_operator_key_is_pinned_once_and_a_different_one_is_refused(tmp_path):
    first, second = Signer.generate(), Signer.generate()
    (tmp_path / "a.pub").write_text(f"{first.public_key} fedrec-operator x\n")
    (tmp_path / "b.pub").write_text(second.public_key + "\n")
    state = tmp_path / "state"
    with pytest.raises(ConfigError, match="pass --operator-key"):
        pin_operator_key(state, None)
    assert pin_operator_key(state, tmp_path / "a.pub") == (first.public_key, True)
    assert pin_operator_key(state, None) == (first.public_key, False)
    with pytest.raises(ConfigError, match=key_fingerprint(first.public_key)):
        pin_operator_key(state, tmp_path / "b.pub")
    (tmp_path / "bad.pub").write_text("not-a-key\n")
    with pytest.raises(ConfigError, match="not an operator public key"):
        pin_operator_key(state, tmp_path / "bad.pub")


def test_the_guard_refuses_before_flower_installs_the_fab_and_ledgers_it(
    tmp_path, fedrec_fab, monkeypatch
):
    import flwr.supernode.runtime.run_clientapp as runtime

    operator = Signer.generate()
    state = _merchant(tmp_path, operator)
    content, fab_hash = fedrec_fab
    installed: list[bytes] = []
    context = types.SimpleNamespace(
        node_config={"state-dir": str(state)},
        run_config={**to_run_config(RunConfig()), "output-dir": "/coord/runs/evil"},
    )  # unsigned
    task = ("message", context, types.SimpleNamespace(run_id=7), types.SimpleNamespace(
        content=content, hash_str=fab_hash))  # fmt: skip
    monkeypatch.setattr(runtime, "pull_task_input", lambda client: task)
    monkeypatch.setattr(runtime, "install_from_fab", lambda data, **kw: installed.append(data))
    monkeypatch.setattr(runtime, "_fedrec_guarded", False, raising=False)
    install()
    runtime.pull_task_input(None)
    with pytest.raises(RunRefused, match="not signed by the federation's operator"):
        runtime.install_from_fab(content, skip_prompt=True)
    assert installed == []  # nothing of the FAB was touched
    (refusal,) = [e for e in read_ledger(state / "ledger.jsonl").entries if e.kind == REFUSAL]
    assert refusal.body["flower_run"] == 7 and refusal.body["run"] == "evil"
    assert "not signed" in (state / "logs" / "refused-runs.log").read_text()

    signed = {
        **context.run_config,
        "output-dir": "/coord/runs/ok",
        "privacy-unit": "user",
        "target-epsilon": 3.0,
    }
    signed[RUN_SIGNATURE_SETTING] = sign_run(
        operator, run_name="ok", fab_sha256=fab_hash, run_config=signed
    )
    context.run_config = signed
    runtime.pull_task_input(None)
    runtime.install_from_fab(content, skip_prompt=True)
    assert installed == [content]


def test_a_refusal_is_recorded_even_when_the_ledger_cannot_be_written(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    (state / "ledger.key").write_text("not a key")
    record_refusal(state, reason="unsigned", flower_run=1, run_name="x")  # does not raise
    assert "could not record the refusal" in caplog.text
