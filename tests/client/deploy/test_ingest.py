"""`fedrec merchant ingest`: new events validated, pseudonymised, de-duplicated, appended
atomically; `fedrec merchant status`: the log and the privacy account."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from client.deploy.enrolment import encode_for_catalog, enrol
from client.deploy.ingest import ingest, log_summary
from client.deploy.pseudonym import pseudonymise
from common.data.catalog import ItemCatalog, catalog_digest
from common.errors import ConfigError, DataError
from simulations.cli import main as fedrec_main

ROOT = Path(__file__).resolve().parents[3]
FIRST = [("alice", "a", 1), ("alice", "b", 2), ("bob", "b", 3)]


def _events(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    lines = ["user_id,item_id,timestamp"] + [f"{u},{i},{t}" for u, i, t in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    enrol(state, data=_events(tmp_path / "first.csv", FIRST), fmt="csv", name="shop-a")
    return state


def _snapshot(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state.iterdir()) if p.is_file()}


def test_new_events_are_appended_pseudonymised_and_duplicates_dropped(
    state: Path, tmp_path: Path
) -> None:
    catalog = ItemCatalog(keys=("a", "b", "c"))
    encode_for_catalog(state, catalog, digest=catalog_digest(catalog.keys))
    assert (state / "catalog.sha256").is_file()
    new = [
        ("alice", "b", 2),  # already stored
        ("alice", "c", 7),
        ("carol", "z", 8),  # a new user, an item outside the catalog
        ("carol", "z", 8),  # repeated within the file
    ]
    done = ingest(state, data=_events(tmp_path / "new.csv", new), fmt="csv")

    assert (done.read, done.added, done.duplicates, done.new_users) == (4, 2, 2, 1)
    assert done.unknown_items == 1
    assert (done.events, done.users, done.items) == (5, 3, 4)
    stored = pd.read_parquet(state / "events.parquet")
    key = (state / "pseudonym.key").read_bytes()
    alice, carol = pseudonymise(key, ["alice", "carol"])
    assert list(stored["user_id"]) == [*pseudonymise(key, ["alice", "alice", "bob"]), alice, carol]
    assert list(stored["item_id"]) == ["a", "b", "b", "c", "z"]
    assert not (state / "catalog.sha256").exists()  # the encoded data is rebuilt at the next run
    for path in state.iterdir():  # raw IDs are nowhere in the state directory
        assert b"carol" not in path.read_bytes()
    info = json.loads((state / "merchant.json").read_text())
    assert (info["events"], info["users"], info["items"]) == (5, 3, 4)
    assert [entry["added"] for entry in info["ingests"]] == [2]
    summary = log_summary(state)
    assert (summary["events"], summary["users"], summary["items"]) == (5, 3, 4)

    before = _snapshot(state)
    again = ingest(state, data=tmp_path / "new.csv", fmt="csv")  # idempotent
    assert (again.added, again.duplicates) == (0, 4)
    assert _snapshot(state) == before


def test_a_malformed_file_or_other_columns_write_nothing(state: Path, tmp_path: Path) -> None:
    before = _snapshot(state)
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\ncarol,a,9\ndave,,x\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        ingest(state, data=bad, fmt="csv")
    assert "line 3" in str(caught.value)
    typed = tmp_path / "typed.csv"
    typed.write_text("user_id,item_id,timestamp,event_type\ncarol,a,9,view\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="it adds event_type.*Nothing was written"):
        ingest(state, data=typed, fmt="csv")
    assert _snapshot(state) == before
    with pytest.raises(ConfigError, match="no enrolled merchant.*fedrec merchant join"):
        ingest(tmp_path / "empty", data=_events(tmp_path / "n.csv", FIRST), fmt="csv")


# Runs ingest in a child process that is SIGKILLed from inside the log's write: after the
# temporary file holds half of the new log, before the rename that commits it.
_KILLED_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import common.fileio as fileio
    from client.deploy.ingest import ingest

    real_fdopen = os.fdopen

    class HalfThenDie:
        def __init__(self, handle):
            self.handle = handle
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def write(self, payload):
            self.handle.write(payload[: len(payload) // 2])
            self.handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def dying_fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        if "events.parquet" in os.readlink(f"/proc/self/fd/{fd}"):
            return HalfThenDie(handle)
        return handle

    fileio.os.fdopen = dying_fdopen
    ingest(Path(sys.argv[1]), data=Path(sys.argv[2]), fmt="csv")
    """
)


def test_a_kill_in_the_middle_of_the_write_leaves_the_log_byte_identical(
    state: Path, tmp_path: Path
) -> None:
    log = state / "events.parquet"
    before = log.read_bytes()
    new = _events(
        tmp_path / "new.csv", [(f"user-{i}", f"item-{i % 7}", 100 + i) for i in range(500)]
    )
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_WRITE, str(state), str(new)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    leftovers = [p.name for p in state.iterdir() if p.name.startswith(".events.parquet.")]
    assert leftovers, "the child was not killed inside the write"  # its half-written temp file
    assert log.read_bytes() == before
    assert log_summary(state)["events"] == len(FIRST)
    done = ingest(state, data=new, fmt="csv")  # the next ingest completes it
    assert done.added == 500 and log_summary(state)["events"] == 503


def test_the_cli_ingests_and_status_reports_log_and_account(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = _events(tmp_path / "new.csv", [("dave", "a", 10), ("alice", "a", 1)])
    assert fedrec_main(["merchant", "ingest", "--state", str(state), "--data", str(new)]) == 0
    said = capsys.readouterr().out
    assert "2 events read, 1 added (1 new users), 1 already stored" in said
    assert "no federation catalog received yet" in said
    assert "log now: 4 events, 3 users, 2 items" in said
    assert fedrec_main(["merchant", "status", "--state", str(state)]) == 0
    said = capsys.readouterr().out
    assert "merchant shop-a" in said and "log: 4 events, 3 users, 2 items" in said
    assert "1 ingests since enrolment" in said
    assert "privacy account: nothing released yet" in said
    assert "user-level DP required" in said  # the default policy


def test_status_states_the_accounts_epsilon_with_its_delta_unit_accountant_and_sampling(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from common.privacy.accountant import PrivacyAccount

    plan = {
        "unit": "user", "accountant": "rdp", "delta": 1e-6, "target_epsilon": 3.0,
        "max_grad_norm": 1.0, "population": 595, "sample_rate": 0.2, "steps_per_round": 5,
        "planned_rounds": 2, "noise_multiplier": 1.5, "count_noise_multiplier": 3.1,
        "inputs": {}, "trains": True,
    }  # fmt: skip
    events = [
        {
            "kind": "item-counts",
            "round": 0,
            "noise_multiplier": 3.1,
            "sample_rate": 1.0,
            "steps": 1,
        },
        {"kind": "dp-sgd", "round": 1, "noise_multiplier": 1.5, "sample_rate": 0.2, "steps": 5},
    ]
    account = PrivacyAccount.from_json(
        {"version": 1, "plan": plan, "events": events}, source="test"
    )
    account.save(state / "privacy_account.json")
    assert fedrec_main(["merchant", "status", "--state", str(state)]) == 0
    said = capsys.readouterr().out
    assert f"epsilon {account.epsilon():.4f} spent of 3 planned, at delta 1e-06" in said
    assert "unit: one user of this merchant, accountant RDP" in said
    assert "item-counts in round 0 (sigma 3.1, no sampling, 1 steps)" in said
    assert "dp-sgd in round 1 (sigma 1.5, Poisson sampling q=0.2, 5 steps)" in said
    assert "lifetime" not in said  # one run: its epsilon is the lifetime one

    later = account.started("summer", account.plan)
    later.save(state / "privacy_account.json")
    assert fedrec_main(["merchant", "status", "--state", str(state)]) == 0
    said = capsys.readouterr().out
    assert (
        f"lifetime: epsilon {later.lifetime_epsilon():.4f} over 2 runs (earlier: ''; this run: "
        "'summer'), every release composed at delta 1e-06, RDP" in said
    )
