"""The `fedrec` command refuses bad flags and paths before any work: no torch, nothing written.

Each refusal names the flag to change (``--out``, ``--delta``, the coordinator
directory) and happens before the progress bar, Ray, or a state directory.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError, ExitCode
from simulations.cli import main

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "opacus", "flwr", "ray", "pandas")
REFUSE = """
import contextlib, io, json, sys
from simulations.cli import main

runs = []
heavy = json.loads(sys.argv[2])
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    runs.append({"code": code, "err": err.getvalue()})
print(json.dumps({"runs": runs, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def _refuse_in_a_fresh_interpreter(*argvs: list[str]) -> tuple[list[dict[str, object]], list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", REFUSE, json.dumps(argvs), json.dumps(HEAVY)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout)
    return report["runs"], report["heavy"]


def test_simulate_refuses_an_existing_out_and_a_bad_delta_before_importing_torch(
    tmp_path: Path,
) -> None:
    # Prepare
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}", encoding="utf-8")
    # Execute
    (taken, delta, both), heavy = _refuse_in_a_fresh_interpreter(
        ["simulate", "--out", str(out)],
        ["simulate", "--epsilon", "3", "--delta", "2", "--out", str(tmp_path / "new")],
        ["simulate", "--epsilon", "0", "--delta", "0", "--rounds", "0"],
    )
    # Assert
    assert taken == {
        "code": ExitCode.RUN_DIR,
        "err": f"fedrec: Run directory {out} already exists; choose another --out or pass "
        "--overwrite.\n",
    }
    assert delta == {
        "code": ExitCode.CONFIG,
        "err": "fedrec: --delta must be in (0, 1), e.g. --delta 1e-6; got 2.\n",
    }
    assert both["code"] == ExitCode.CONFIG  # every problem at once
    assert both["err"] == (
        "fedrec: --epsilon must be > 0 (leave it out for no DP), got 0; --delta must be in "
        "(0, 1), e.g. --delta 1e-6; got 0; --rounds must be >= 1, got 0.\n"
    )
    assert heavy == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing new
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # nothing replaced


def test_delta_too_large_for_the_merchants_names_delta_before_the_progress_bar(
    tmp_path: Path,
) -> None:
    # Prepare: 2 merchants of ~30 users each; delta 0.1 is not below 1/30.
    from common.config import parse_run_config
    from common.data.partition import PartitionConfig
    from simulations.runner import DataSource, SimulationSpec, simulate
    from simulations.synthetic import SyntheticSpec

    run = parse_run_config({"privacy-unit": "user", "target-epsilon": 3.0, "target-delta": 0.1})
    spec = SimulationSpec(
        run=run,
        source=DataSource(synthetic=SyntheticSpec(num_merchants=2, num_users=60, num_items=40)),
        partition=PartitionConfig(scheme="natural"),
        run_dir=tmp_path / "run",
    )
    started: list[bool] = []
    # Execute
    with pytest.raises(ConfigError) as refused:
        simulate(spec, on_start=lambda: started.append(True))
    # Assert
    message = str(refused.value)
    assert message.startswith("delta 0.1 must be below 1/(users at each merchant): merchant-")
    assert "Lower it with --delta (in an experiment file: delta under [privacy]), e.g. --delta" in (
        message
    )
    assert "--set target-delta" not in message
    assert started == []  # the bar (on_start) never appeared
    assert not (tmp_path / "run").exists() and not (tmp_path / "run.incomplete").exists()


def test_run_names_a_missing_coordinator_directory_not_a_stopped_coordinator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    missing = tmp_path / "nosuchdir"
    empty = tmp_path / "empty"
    empty.mkdir()
    # Execute
    codes = [main(["run", str(missing)]), main(["run", str(empty), "--delta", "1e-6"])]
    # Assert
    err = capsys.readouterr().err.splitlines()
    assert codes == [ExitCode.CONFIG, ExitCode.CONFIG]
    assert err == [
        f"fedrec: Coordinator directory {missing} does not exist; pass the directory that "
        "`fedrec coordinator init DIR --san HOST` created.",
        f"fedrec: {empty} is not a coordinator directory (no coordinator.toml). Create one with "
        f"`fedrec coordinator init {empty} --san HOST`.",
    ]
    assert not (missing.exists() or any(empty.iterdir()))


def test_join_refuses_an_unreachable_coordinator_before_writing_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: a real CA, node key and operator key, an event log, a port nobody listens on.
    from client.deploy.node_key import generate_node_key
    from server.ops.tls import TlsFiles, make_tls

    tls = TlsFiles(*(tmp_path / name for name in ("ca.pem", "ca.key", "s.pem", "s.key")))
    make_tls(tls, sans=["127.0.0.1"], valid_days=1)
    generate_node_key(tmp_path / "key")
    operator = tmp_path / "operator.pub"
    operator.write_text(base64.b64encode(bytes(range(32))).decode() + "\n", encoding="ascii")
    data = tmp_path / "events.csv"
    data.write_text("user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\n", encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends
    state = tmp_path / "shop-a"
    argv = ["merchant", "join", "--coordinator", f"127.0.0.1:{port}", "--ca", str(tls.ca_cert)]
    argv += ["--operator-key", str(operator), "--key", str(tmp_path / "key")]
    argv += ["--data", str(data), "--state", str(state)]
    # Execute
    code = main(argv)
    # Assert
    err = capsys.readouterr().err
    assert code == ExitCode.JOIN_FAILED
    assert err.startswith(f"fedrec: Cannot reach the coordinator at 127.0.0.1:{port} (")
    assert not state.exists()  # no pseudonym key, event log, pinned key or policy
