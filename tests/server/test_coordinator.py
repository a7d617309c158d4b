"""Coordinator directory and admissions: what is refused, and why."""

from __future__ import annotations

import datetime as dt

import pytest

from client.node_key import generate_node_key
from common.errors import ConfigError
from server.coordinator import REVOKE_PENDING, CoordinatorDir, load_admissions, save_admissions
from server.operations import admit, init_coordinator, revoke


def test_init_admit_revoke_and_the_rules_they_enforce(tmp_path):
    directory = init_coordinator(tmp_path / "coord", sans=["127.0.0.1"], port=19999)
    assert directory.settings().local_address == "127.0.0.1:19999"  # 0.0.0.0 -> first SAN
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
