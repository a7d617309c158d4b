"""End to end on 127.0.0.1: merchants execute only operator-signed fedrec runs their policy accepts.

One federation (coordinator + 3 merchants as real processes) serves the
module, in order:

1. someone with the coordinator's machine but not the operator's signing key
   submits a FAB carrying its own ClientApp code through the loopback Control
   API: no merchant imports it, each refuses, logs and ledgers the refusal;
2. a correctly signed non-private run is refused by every merchant (default
   policy: user-level DP required);
3. a signed run with epsilon 3 is refused by the one merchant whose policy
   allows at most epsilon 2 per run; the other two train it to the end.
"""

from __future__ import annotations

import json
import time

import pytest

from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_path
from server.ops.coordinator import CoordinatorDir
from server.ops.submit import Submission, _toml_table, resolve_settings
from server.ops.superlink import control
from tests.e2e.federation import Federation, started

pytestmark = pytest.mark.e2e

MERCHANTS = ["shop-a", "shop-b", "shop-c"]
QUICK = ("--round-timeout", "60", "--set", "node-wait-timeout=15")

EVIL_APP = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "fedrec-app"
version = "0.1.0"
dependencies = []

[tool.flwr.app]
publisher = "fedrec"

[tool.flwr.app.components]
serverapp = "server.server_app:app"
clientapp = "evil:app"

[tool.flwr.app.config]
{config}
"""

EVIL_CODE = """\
import os, pathlib
pathlib.Path({marker!r}, f"imported-by-{{os.getpid()}}").write_text(os.environ.get("FLWR_HOME", ""))
app = __import__("client.client_app", fromlist=["app"]).app
"""


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    with started(tmp_path_factory.mktemp("signed"), MERCHANTS) as fed:
        yield fed


def _refusals(fed: Federation, name: str) -> list[dict[str, object]]:
    return [e.body for e in read_ledger(fed.state(name) / "ledger.jsonl").entries
            if e.kind == "refusal"]  # fmt: skip


def _wait_for_refusals(fed: Federation, names: list[str], count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(_refusals(fed, n)) >= count for n in names):
            return
        time.sleep(0.5)
    raise AssertionError(
        f"not every merchant of {names} refused {count} time(s) in {timeout} s: "
        + "; ".join(f"{n}: {_refusals(fed, n)}" for n in names)
    )


def test_an_unsigned_fab_with_its_own_code_is_refused_before_any_import(federation, tmp_path):
    fed = federation
    directory = CoordinatorDir(fed.coord)
    marker = tmp_path / "markers"
    marker.mkdir()
    app = tmp_path / "evil-app"
    app.mkdir()
    settings = resolve_settings(
        directory,
        Submission(name="evil", settings={"privacy-unit": "user", "target-epsilon": 3.0}),
    )
    (app / "pyproject.toml").write_text(EVIL_APP.format(config=_toml_table(settings)))
    (app / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = tmp_path / "evil.toml"
    config.write_text(_toml_table({**settings, "node-wait-timeout": 15.0}))
    cli = control(directory)  # the loopback Control API: the operator's machine, not its key
    run_id = cli.submit(app, config_file=config)
    try:
        _wait_for_refusals(fed, MERCHANTS, 1, timeout=120)
    finally:
        cli.stop(run_id)
    assert list(marker.iterdir()) == []  # no merchant process imported the attacker's code
    for name in MERCHANTS:
        (refusal,) = _refusals(fed, name)
        assert refusal["flower_run"] == run_id
        assert "ships its own files (evil.py)" in str(refusal["reason"])
        log = (fed.state(name) / "logs" / "refused-runs.log").read_text()
        assert f"flower-run={run_id}" in log and "evil.py" in log
        assert verify_path(fed.state(name)).ok


def test_a_signed_non_private_run_is_refused_by_merchants_that_require_dp(federation):
    fed = federation
    done = fed.run("open", "--rounds", "1", "--min-nodes", "3", *QUICK, timeout=240)
    assert done.returncode != 0, done.stdout
    _wait_for_refusals(fed, MERCHANTS, 2, timeout=30)
    for name in MERCHANTS:
        latest = _refusals(fed, name)[-1]
        assert latest["run"] == "open"
        assert "requires user-level DP" in str(latest["reason"])
        assert "privacy-unit=off" in str(latest["reason"])
        assert not (fed.state(name) / "privacy_account.json").exists()  # nothing trained


def test_a_run_above_one_merchants_epsilon_limit_is_refused_by_that_merchant_only(federation):
    fed = federation
    (fed.state("shop-c") / "policy.json").write_text(
        json.dumps({"require-privacy": "user", "max-epsilon-per-run": 2.0})
    )
    before = {name: len(_refusals(fed, name)) for name in MERCHANTS}
    done = fed.run(
        "capped",
        "--rounds",
        "1",
        "--epsilon",
        "3",
        "--model",
        "mf",
        "--min-nodes",
        "2",
        *QUICK,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    history = json.loads((fed.coord / "runs" / "capped" / "federation.json").read_text())
    assert sorted(history["rounds"][0]["train"]) == ["shop-a", "shop-b"]
    refused = _refusals(fed, "shop-c")[before["shop-c"] :]
    assert refused and all("limit of 2 per run" in str(r["reason"]) for r in refused)
    for name in ("shop-a", "shop-b"):
        assert len(_refusals(fed, name)) == before[name]
        assert verify_path(fed.state(name)).ok
    verdict = verify_path(fed.coord / "runs" / "capped")
    assert verdict.ok, [p.render() for p in verdict.problems]
