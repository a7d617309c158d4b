"""An outsider holding ca.pem dials the public port: no Control or Runtime API answers there.

A real ``fedrec coordinator start`` on 127.0.0.1 (SuperLink on the loopback
internal port, nginx on the public one). The outsider speaks TLS verified
against ``ca.pem`` to the public address: Flower's own ``flwr ls`` fails,
raw Control and Runtime calls (list and start runs, register a node, list
nodes) and every other spelling of them are answered 404/403, while a Fleet
call is forwarded to the SuperLink (which then asks for node
authentication). That merchants still train through the proxy is shown by
tests/e2e/test_deployment.py.
"""

from __future__ import annotations

import http.client
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.ops.flwr_cli import CONNECTION, ControlError, FlowerCli
from tests.e2e.federation import Federation

pytestmark = pytest.mark.e2e

PROTOBUF = "application/protobuf"
CONTROL_AND_RUNTIME = [
    "/v1/control/list-runs",
    "/v1/control/start-run",
    "/v1/control/register-node",
    "/v1/control/list-nodes",
    "/v1/runtime/get-nodes",
    "/health",
    "/docs",
    "/openapi.json",
    # Spellings that a path-based filter could let through to the SuperLink:
    "/v1/fleet/../control/start-run",
    "/v1/fleet/%2e%2e/control/start-run",
    "/v1/fleet/..%2Fcontrol%2Fstart-run",
    "/v1/fleet//../control/list-runs",
    "/v1/fleet/pull-messages/../../control/list-runs",
    "/v1/fleet/pull-messages?/../../control/list-runs",
    "//v1/control/list-runs",
    "/V1/CONTROL/list-runs",
]


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = Federation(root=tmp_path_factory.mktemp("outsider"), merchants=["shop-a"])
    try:
        fed.init()
        fed.start_coordinator()
        yield fed
    finally:
        fed.close()


def _settings(fed: Federation) -> tuple[int, int, Path]:
    text = (fed.coord / "coordinator.toml").read_text()
    internal = int(text.split("internal-port = ")[1].split()[0])
    return fed.port, internal, fed.coord / "tls" / "ca.pem"


def _post(port: int, path: str, ca: Path, *, method: str = "POST") -> tuple[int, bytes]:
    """One request with TLS verified against ``ca`` and the path sent exactly as written."""
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=20)
    try:
        connection.request(method, path, body=b"", headers={"content-type": PROTOBUF})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("path", CONTROL_AND_RUNTIME)
def test_the_public_port_refuses_every_control_and_runtime_call(
    coordinator: Federation, path: str
) -> None:
    public, _, ca = _settings(coordinator)
    status, _ = _post(public, path, ca)
    assert status in (403, 404), (path, status)


def test_the_control_api_answers_on_loopback_only_and_fleet_calls_pass_the_proxy(
    coordinator: Federation,
) -> None:
    public, internal, ca = _settings(coordinator)
    # The same Control call succeeds on the SuperLink's own port, from this machine:
    assert _post(internal, "/v1/control/list-runs", ca)[0] == 200
    # ... which listens on 127.0.0.1 alone (no wildcard or other address):
    listening = _listening_addresses(internal)
    assert listening == {"127.0.0.1"}, listening
    # A Fleet call is forwarded; the SuperLink itself demands node authentication.
    status, body = _post(public, "/v1/fleet/get-run", ca)
    assert (status, b"Invalid SuperNode authentication" in body) == (401, True)
    assert _post(public, "/v1/fleet/get-run", ca, method="GET")[0] == 403


def test_flwr_itself_cannot_list_runs_through_the_public_address(
    coordinator: Federation, tmp_path: Path
) -> None:
    public, internal, ca = _settings(coordinator)
    outsider = FlowerCli(home=tmp_path / "outsider", address=f"127.0.0.1:{public}", ca=ca)
    with pytest.raises(ControlError, match="404 Not Found.*/v1/control/list-runs"):
        outsider.call("ls", CONNECTION, timeout=60)
    operator = FlowerCli(home=tmp_path / "operator", address=f"127.0.0.1:{internal}", ca=ca)
    assert operator.call("ls", CONNECTION, timeout=60)["success"] is True


def _listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    raw = bytes.fromhex(hex_address)
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))
