"""TLS material: a CA and a server certificate that a TLS client accepts for its SANs only."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest

from common.errors import ConfigError
from server.ops.tls import TlsFiles, certificate_info, make_tls, with_loopback


def _files(root: Path) -> TlsFiles:
    return TlsFiles(root / "ca.pem", root / "ca.key", root / "server.pem", root / "server.key")


def test_server_certificate_names_its_sans_and_verifies_against_the_ca(tmp_path: Path) -> None:
    files = _files(tmp_path)
    make_tls(files, sans=["127.0.0.1", "localhost", "coord.example.org"], valid_days=30)

    info = certificate_info(files.server_cert)
    assert set(info.sans) == {"127.0.0.1", "localhost", "coord.example.org"}
    assert not info.expired()
    assert dt.timedelta(days=29) < info.not_after - dt.datetime.now(dt.UTC) < dt.timedelta(31)
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The standard library's TLS stack accepts the pair: server side loads, client trusts the CA.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.server_cert, files.server_key)
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    assert client.cert_store_stats()["x509_ca"] == 1


def test_a_certificate_valid_for_zero_days_is_refused_and_bad_sans_are_named(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        make_tls(_files(tmp_path), sans=["127.0.0.1"], valid_days=0)
    with pytest.raises(ConfigError, match="neither an IP address nor a DNS name"):
        make_tls(_files(tmp_path), sans=["http://x"], valid_days=3)
    with pytest.raises(ConfigError, match="--san"):
        make_tls(_files(tmp_path), sans=[], valid_days=3)
    assert not (tmp_path / "ca.pem").exists()


def test_coordinator_certificates_always_name_the_superlinks_loopback_address() -> None:
    assert with_loopback(["coord.example.org"]) == ["coord.example.org", "127.0.0.1", "localhost"]
    assert with_loopback(["LocalHost", "127.0.0.1"]) == ["LocalHost", "127.0.0.1"]
    assert with_loopback(["10.0.0.5", "127.0.0.1"]) == ["10.0.0.5", "127.0.0.1", "localhost"]
    with pytest.raises(ConfigError, match="at least one name merchants dial"):
        with_loopback([])


def test_a_certificate_says_which_loopback_names_it_lacks(tmp_path: Path) -> None:
    files = _files(tmp_path)
    make_tls(files, sans=["coord.example.org", "localhost"], valid_days=3)
    assert certificate_info(files.server_cert).missing_loopback() == ("127.0.0.1",)
    make_tls(files, sans=with_loopback(["coord.example.org"]), valid_days=3)
    assert certificate_info(files.server_cert).missing_loopback() == ()
