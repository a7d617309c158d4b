"""The public proxy: nginx forwards POST /v1/fleet/NAME to the loopback SuperLink, nothing else."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.ports import PortInUseError
from server.ops import proxy
from server.ops.coordinator import CoordinatorDir, CoordinatorSettings, default_internal_port
from server.ops.operations import init_coordinator
from server.ops.proxy import ProxySpec, proxy_spec, render_config, start_proxy, write_config
from server.ops.tls import TlsFiles, make_tls

NGINX = shutil.which("nginx", path="/usr/sbin:/sbin:/usr/bin:/bin")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run does)")


def _spec(root: Path, *, host: str = "0.0.0.0", port: int = 9092, internal: int = 1) -> ProxySpec:
    tls = root / "tls"
    return ProxySpec(
        listen_host=host,
        listen_port=port,
        upstream_port=internal,
        server_cert=tls / "server.pem",
        server_key=tls / "server.key",
        ca_cert=tls / "ca.pem",
        root=root / "proxy",
        logs=root / "logs",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_config_proxies_the_fleet_api_alone_over_verified_tls(tmp_path: Path) -> None:
    text = render_config(_spec(tmp_path, port=9092, internal=19093))

    assert re.findall(r"location\s+(\S+)\s*\{", text) == ["/v1/fleet/", "/"]
    assert re.findall(r"proxy_pass\s+(\S+);", text) == ["https://superlink"]
    assert re.findall(r"upstream superlink \{\s*server (\S+);", text) == ["127.0.0.1:19093"]
    assert re.findall(r"listen (.+);", text) == ["0.0.0.0:9092 ssl"]
    fleet = text[text.index("location /v1/fleet/") : text.index("location / {")]
    assert 'if ($request_uri !~ "^/v1/fleet/[a-z0-9-]+$")' in fleet  # raw spelling only
    assert "limit_except POST" in fleet
    for directive in (
        f'ssl_certificate "{tmp_path}/tls/server.pem";',
        f'ssl_certificate_key "{tmp_path}/tls/server.key";',
        f'proxy_ssl_trusted_certificate "{tmp_path}/tls/ca.pem";',
        "proxy_ssl_verify on;",
        "proxy_ssl_name localhost;",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "client_max_body_size 0;",
        "proxy_read_timeout 600s;",
        "keepalive_timeout 4s;",
        f'pid "{tmp_path}/proxy/nginx.pid";',
        f'error_log "{tmp_path}/logs/proxy-error.log" notice;',
        f'access_log "{tmp_path}/logs/proxy-access.log";',
    ):
        assert directive in text, directive
    location_root = text[text.index("location / {") :]
    assert "return 404;" in location_root and "proxy_pass" not in location_root
    assert "/v1/control" not in text and "/v1/runtime" not in text
    assert re.findall(r'_temp_path "([^"]+)"', text) == [
        f"{tmp_path}/proxy/tmp/{name}" for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")
    ]


@pytest.mark.parametrize(
    ("host", "listen", "probe"),
    [
        ("0.0.0.0", "0.0.0.0:9092", "127.0.0.1"),
        ("::", "[::]:9092", "::1"),
        ("", "9092", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5:9092", "10.0.0.5"),
        ("coord.example.org", "coord.example.org:9092", "coord.example.org"),
    ],
)
def test_listen_addresses_and_where_the_coordinator_probes_them(
    tmp_path: Path, host: str, listen: str, probe: str
) -> None:
    spec = _spec(tmp_path, host=host)
    assert (spec.listen, spec.probe_host) == (listen, probe)
    assert f"listen {listen} ssl;" in render_config(spec)


def test_the_spec_comes_from_the_coordinator_directory(tmp_path: Path) -> None:
    directory = init_coordinator(
        tmp_path / "coord", sans=["coord.example.org"], port=19500, internal_port=19600
    )
    spec = proxy_spec(directory)
    assert (spec.listen_host, spec.listen_port, spec.upstream_port) == ("0.0.0.0", 19500, 19600)
    assert spec.ca_cert == (tmp_path / "coord" / "tls" / "ca.pem").resolve()
    assert spec.conf == (tmp_path / "coord" / "proxy" / "nginx.conf").resolve()


def test_paths_nginx_cannot_quote_and_same_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="move the coordinator directory"):
        render_config(_spec(tmp_path / "a;b"))
    with pytest.raises(ConfigError, match="SuperLink's own port 9092"):
        _spec(tmp_path, port=9092, internal=9092)


def test_a_missing_nginx_is_named_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(proxy, "SEARCH_PATH", ())
    with pytest.raises(ConfigError, match=r"not installed.*apt-get install -y nginx-light"):
        proxy.find_nginx()


def test_internal_port_defaults_to_port_plus_one_and_must_differ(tmp_path: Path) -> None:
    assert (default_internal_port(9092), default_internal_port(65535)) == (9093, 65534)
    settings = CoordinatorSettings(host="0.0.0.0", port=9092, internal_port=9300, sans=("a",))
    assert (settings.local_address, settings.public_address) == ("127.0.0.1:9300", "0.0.0.0:9092")
    assert CoordinatorSettings(host="::", port=1, internal_port=2, sans=()).public_address == (
        "[::]:1"
    )
    with pytest.raises(ConfigError, match="internal-port must differ from port \\(both 9092\\)"):
        CoordinatorSettings(host="0.0.0.0", port=9092, internal_port=9092, sans=("a",))
    with pytest.raises(ConfigError) as refused:  # every problem at once
        CoordinatorSettings(host="0.0.0.0", port=0, internal_port=70000, sans=("a",))
    assert "port must be 1-65535, got 0" in str(refused.value)
    assert "internal-port must be 1-65535, got 70000" in str(refused.value)
    with pytest.raises(ConfigError, match="--internal-port 9093"):
        init_coordinator(tmp_path / "c", sans=["127.0.0.1"], port=9092, internal_port=9092)
    assert not (tmp_path / "c").exists()  # refused before anything was written


def test_a_coordinator_toml_without_internal_port_gets_port_plus_one(tmp_path: Path) -> None:
    directory = init_coordinator(tmp_path / "coord", sans=["127.0.0.1"], port=19500)
    text = directory.config_path.read_text()
    assert "internal-port = 19501" in text
    directory.config_path.write_text(re.sub(r"internal-port = .*\n", "", text))  # an older file
    assert directory.settings().internal_port == 19501
    assert directory.settings().local_address == "127.0.0.1:19501"
    directory.config_path.write_text(text.replace("internal-port = 19501", "internal-port = 19500"))
    with pytest.raises(ConfigError, match=r"coordinator.toml: internal-port must differ"):
        CoordinatorDir(tmp_path / "coord").settings()


def _post(port: int, path: str, ca: Path, *, method: str = "POST") -> int:
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        connection.request(method, path, body=b"", headers={"content-type": "application/x"})
        return connection.getresponse().status
    finally:
        connection.close()


@needs_nginx
def test_nginx_accepts_the_config_serves_tls_refuses_other_paths_and_stops(tmp_path: Path) -> None:
    make_tls(
        TlsFiles(*(tmp_path / "tls" / n for n in ("ca.pem", "ca.key", "server.pem", "server.key"))),
        sans=["127.0.0.1", "localhost"],
        valid_days=2,
    )
    (upstream, public) = (_free_port(), _free_port())
    spec = _spec(tmp_path, host="127.0.0.1", port=public, internal=upstream)
    assert NGINX is not None
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(spec.root), "-c", str(write_config(spec))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr

    running = start_proxy(spec, nginx=NGINX)
    try:
        running.wait_until_serving(timeout=10)
        assert spec.pid_file.is_file()
        ca = spec.ca_cert
        assert _post(public, "/v1/control/list-runs", ca) == 404
        assert _post(public, "/v1/runtime/get-nodes", ca) == 404
        assert _post(public, "/v1/fleet/../control/start-run", ca) == 404
        assert _post(public, "/v1/fleet/get-run", ca, method="GET") == 403
        assert _post(public, "/v1/fleet/get-run", ca) == 502  # forwarded; no SuperLink here
    finally:
        running.stop(grace=5)
    assert running.process.returncode == 0  # SIGQUIT: a graceful exit
    assert not spec.pid_file.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", public), timeout=1).close()


@needs_nginx
def test_a_port_in_use_fails_the_start_with_nginx_s_reason(tmp_path: Path) -> None:
    make_tls(
        TlsFiles(*(tmp_path / "tls" / n for n in ("ca.pem", "ca.key", "server.pem", "server.key"))),
        sans=["127.0.0.1", "localhost"],
        valid_days=2,
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spec = _spec(tmp_path, host="127.0.0.1", port=taken.getsockname()[1], internal=1)
        assert NGINX is not None
        running = start_proxy(spec, nginx=NGINX)
        try:
            with pytest.raises(PortInUseError) as refused:
                running.wait_until_serving(timeout=10)
        finally:
            running.stop()
    port = spec.listen_port
    assert str(refused.value) == (
        f"port {port} is in use: nginx (the public proxy, Fleet API only) cannot listen on "
        f"127.0.0.1:{port} (bind() to 127.0.0.1:{port} failed (98: Address already in use)); "
        "stop the process that holds it or set port in coordinator.toml to a free port."
    )
