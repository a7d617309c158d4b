"""A real ``fedrec simulate`` killed in the middle of a run leaves a ledger that verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from common.privacy.ledger import read_ledger
from common.privacy.verify import verify_path

pytestmark = pytest.mark.integration


def test_a_killed_run_leaves_a_verifiable_ledger_showing_the_incomplete_round(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "simulations.cli", "simulate", "--epsilon", "3", "--model", "mf",
        "--merchants", "3", "--users", "900", "--items", "200",
        "--set", "num-server-rounds=40", "--set", "target-delta=1e-4", "--out", str(run_dir),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            # The run is built in a hidden staging directory beside --out until it completes.
            staged = list(tmp_path.glob(".run.*/ledger/federation.jsonl"))
            federation = staged[0] if staged else tmp_path / "none"
            if federation.is_file() and any(
                e.kind == "round-head" and e.body["round"] >= 2
                for e in read_ledger(federation).entries
            ):
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("round 2 was not countersigned within 240 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and every Ray worker it started
        process.wait(timeout=30)

    assert not run_dir.exists()  # never renamed into place: the run did not complete
    staging = federation.parent.parent
    verdict = verify_path(staging)
    assert verdict.ok, [p.render() for p in verdict.problems]
    assert set(verdict.parties) == {"coordinator", "merchant-00", "merchant-01", "merchant-02"}
    assert any("the run did not close: INCOMPLETE" in note for note in verdict.notes), verdict.notes
    entries = read_ledger(federation).entries
    assert entries[-1].kind != "close"
    assert max(e.body["round"] for e in entries if e.kind == "round-head") < 40
