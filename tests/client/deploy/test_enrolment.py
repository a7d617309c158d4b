"""Join-time preparation: validated, pseudonymised events; catalog encoding at first contact."""

from __future__ import annotations

import stat
from pathlib import Path

import pandas as pd
import pytest

from client.deploy.enrolment import encode_for_catalog, enrol
from client.deploy.node_key import fingerprint, generate_node_key, load_public_key
from client.deploy.pseudonym import load_or_create_key, pseudonymise
from client.state.store import MerchantStore
from common.data.catalog import ItemCatalog, catalog_digest
from common.errors import ConfigError, DataError


def _write_events(path: Path, rows: list[tuple[str, str, int]]) -> Path:
    lines = ["user_id,item_id,timestamp"] + [f"{u},{i},{t}" for u, i, t in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


ROWS = [("alice", "a", 1), ("alice", "b", 2), ("bob", "b", 3), ("bob", "z", 4), ("bob", "c", 5)]


def test_pseudonyms_are_keyed_hmacs_stable_per_key_and_differ_across_keys(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "k") == key
    first = pseudonymise(key, ["alice", "bob", "alice"])
    assert first[0] == first[2] != first[1]
    assert len(first[0]) == 64 and "alice" not in first[0]
    other = pseudonymise(b"\x01" * 32, ["alice"])
    assert other[0] != first[0]
    # HMAC-SHA256 test vector (RFC 4231, case 2): key "Jefe".
    assert (
        pseudonymise(b"Jefe", ["what do ya want for nothing?"])[0]
        == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_enrol_keeps_only_pseudonymised_events_and_encodes_per_catalog(tmp_path: Path) -> None:
    state = tmp_path / "state"
    data = _write_events(tmp_path / "events.csv", ROWS)

    enrolment = enrol(state, data=data, fmt="csv", name="shop-a")

    assert (enrolment.events, enrolment.users, enrolment.items) == (5, 2, 4)
    stored = pd.read_parquet(state / "events.parquet")
    assert not {"alice", "bob"} & set(stored["user_id"])
    for path in state.iterdir():  # raw IDs are nowhere in the state directory
        assert b"alice" not in path.read_bytes()
    assert MerchantStore(state).name == "shop-a"
    assert not enrol(state, data=data, fmt="csv", name="shop-a").changed

    catalog = ItemCatalog(keys=("a", "b", "c"))
    encoding = encode_for_catalog(state, catalog, digest=catalog_digest(catalog.keys))
    assert (encoding.users, encoding.unknown_events, encoding.reused) == (2, 1, False)
    loaded = MerchantStore(state).load_data()
    assert loaded.num_items == 3 and loaded.unknown_items == 1
    assert encode_for_catalog(state, catalog, digest=catalog_digest(catalog.keys)).reused


def test_enrol_refuses_bad_files_and_another_merchants_state(tmp_path: Path) -> None:
    state = tmp_path / "state"
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,timestamp\nalice,a,1\nbob,,x\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        enrol(state, data=bad, fmt="csv", name="shop-a")
    assert "line 3" in str(caught.value)
    assert not state.exists()  # nothing half-written
    with pytest.raises(DataError, match="does not exist|no such file|not found"):
        enrol(state, data=tmp_path / "missing.csv", fmt="csv", name="shop-a")
    enrol(state, data=_write_events(tmp_path / "e.csv", ROWS), fmt="csv", name="shop-a")
    with pytest.raises(ConfigError, match="belongs to merchant 'shop-a'"):
        enrol(state, data=tmp_path / "e.csv", fmt="csv", name="shop-b")
    with pytest.raises(ConfigError, match="ASCII letters, digits"):
        enrol(tmp_path / "s2", data=tmp_path / "e.csv", fmt="csv", name="bad name")


def test_node_keys_are_p384_openssh_and_not_overwritten(tmp_path: Path) -> None:
    public = generate_node_key(tmp_path)
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    canonical = load_public_key(public)
    assert len(fingerprint(canonical)) == 16
    with pytest.raises(ConfigError, match="already exists"):
        generate_node_key(tmp_path)
    (tmp_path / "rsa.pub").write_text("ssh-rsa AAAAB3NzaC1yc2E= x\n")
    with pytest.raises(ConfigError, match="not an OpenSSH public key|EC P-384"):
        load_public_key(tmp_path / "rsa.pub")


def test_a_killed_but_unreaped_supernode_does_not_block_a_restart(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from client.deploy.supernode import _running

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while dead.poll() is None and time.monotonic() < deadline:  # poll() reaps: re-create
            time.sleep(0.05)
        zombie = subprocess.Popen([sys.executable, "-c", "pass"])
        time.sleep(1.0)  # exited, not waited for: a zombie, as after a SIGKILL whose parent died
        assert _running(live.pid, grace=0.2)
        stat = Path(f"/proc/{zombie.pid}/stat").read_text()
        assert stat.rsplit(")", 1)[1].split()[0] == "Z"  # it exists, as a zombie
        assert not _running(zombie.pid, grace=0.2)
        assert not _running(dead.pid, grace=0.2)
    finally:
        live.kill()
        live.wait()
        zombie.wait()
