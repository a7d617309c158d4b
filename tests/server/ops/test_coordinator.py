"""Coordinator directory and admissions: what is refused, and why."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from client.deploy.node_key import generate_node_key
from common.errors import ConfigError
from server.ops import superlink
from server.ops.coordinator import REVOKE_PENDING, CoordinatorDir, load_admissions, save_admissions
from server.ops.operations import admit, init_coordinator, revoke
from server.ops.superlink import check_ready_to_start
from server.ops.tls import make_tls


def test_init_admit_revoke_and_the_rules_they_enforce(tmp_path):
    directory = init_coordinator(tmp_path / "coord", sans=["127.0.0.1"], port=19999)
    settings = directory.settings()
    assert settings.public_address == "0.0.0.0:19999"  # nginx: the Fleet API only
    assert settings.local_address == "127.0.0.1:20000"  # the SuperLink: loopback, port + 1
    assert settings.sans == ("127.0.0.1", "localhost")  # localhost added: nginx verifies by it
    with pytest.raises(ConfigError, match="--force-tls"):
        init_coordinator(tmp_path / "coord", sans=["127.0.0.1"])
    key = generate_node_key(tmp_path / "keys")
    admission = admit(directory, name="shop-a", public_key=key, valid_days=30)
    expires = dt.datetime.fromisoformat(admission.expires_at)
    assert dt.timedelta(days=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    with pytest.raises(ConfigError, match="already admitted"):
        admit(directory, name="shop-a", public_key=key, valid_days=0)
    with pytest.raises(ConfigError, match="never registers a key twice"):
        admit(directory, name="shop-b", public_key=key, valid_days=0)
    admissions = load_admissions(directory)
    admissions["shop-a"].status = "registered"
    admissions["shop-a"].node_id = 7
    save_admissions(directory, admissions)
    assert revoke(directory, name="shop-a").status == REVOKE_PENDING  # unregistered at start
    with pytest.raises(ConfigError, match="already revoked"):
        revoke(directory, name="shop-a")
    with pytest.raises(ConfigError, match="No merchant 'nobody'"):
        revoke(directory, name="nobody")
    with pytest.raises(ConfigError, match="not a coordinator directory"):
        CoordinatorDir(tmp_path / "elsewhere").settings()


def test_start_refuses_a_certificate_without_the_loopback_names_and_says_how_to_renew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(superlink, "find_nginx", lambda: "/usr/sbin/nginx")  # not under test
    directory = init_coordinator(
        tmp_path / "coord", sans=["coord.example.org"], host="10.0.0.5", port=19500
    )
    check_ready_to_start(directory)  # 127.0.0.1 and localhost were added by init
    make_tls(directory.tls, sans=["coord.example.org"], valid_days=3)  # an older certificate

    with pytest.raises(ConfigError) as refused:
        check_ready_to_start(directory)
    message = str(refused.value)
    assert "not valid for 127.0.0.1 and localhost (it names coord.example.org)" in message
    assert (
        f"`fedrec coordinator init {directory.root} --san coord.example.org --host 10.0.0.5 "
        "--port 19500 --internal-port 19501 --force-tls`" in message
    )


def test_a_second_start_names_the_running_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(superlink, "find_nginx", lambda: "/usr/sbin/nginx")  # not under test
    directory = init_coordinator(tmp_path / "coord", sans=["127.0.0.1"], port=19700)
    directory.pid_file.parent.mkdir(parents=True, exist_ok=True)
    directory.pid_file.write_text(str(os.getpid()))  # a live process: this one
    with pytest.raises(ConfigError) as refused:
        superlink.check_ready_to_start(directory)
    assert str(refused.value).endswith(
        f"is already running (pid {os.getpid()}); stop it first (Ctrl-C in its terminal, or "
        f"`kill {os.getpid()}`)."
    )
    assert "{pid}" not in str(refused.value)
