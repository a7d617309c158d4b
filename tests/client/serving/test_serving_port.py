"""A port already serving is refused, never shared: one merchant's users get one model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from client.serving import service
from client.serving.api import stubs
from client.serving.index import ServingOptions
from client.serving.service import ModelHolder, start_server
from common.ports import PortInUseError
from tests.client.serving.conftest import make_served

MESSAGES, SERVICES = stubs()
ROOT = Path(__file__).resolve().parents[3]
FEDREC = str(Path(sys.executable).with_name("fedrec"))


def _serve(state: Path, models: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    """``fedrec serve`` of this checkout, its output in ``out``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with out.open("wb") as handle:
        return subprocess.Popen(
            [FEDREC, "serve", "--state", str(state), "--model", str(models), "--port", str(port),
             "--personalisation", "inf", "--reload-interval", "60"],
            stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


def test_a_second_serve_on_a_used_port_exits_and_the_first_answers_every_request(
    tmp_path: Path,
) -> None:
    first = make_served(tmp_path / "first", seed=0)
    other = make_served(tmp_path / "other", seed=1)  # another merchant's model
    holder = ModelHolder(first.models, first.state, ServingOptions())
    running = start_server(holder, port=0, reload_interval=60)
    index = holder.current()
    assert index is not None
    out = tmp_path / "second.log"
    second = _serve(other.state, other.models, running.port, out)
    try:
        deadline = time.monotonic() + 90
        while second.poll() is None and time.monotonic() < deadline:
            if "serving model" in out.read_text(errors="replace"):
                break  # the bug: it claims the port too; the requests below show the split
            time.sleep(0.2)
        versions = []
        for user in first.raw_users[:20]:  # a new connection each: the kernel picks a listener
            with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = SERVICES.RecommenderStub(channel)
                reply = stub.Recommend(MESSAGES.RecommendRequest(user_id=user, k=5), timeout=10)
                versions.append(reply.model_version)
        assert versions == [index.version] * 20
        assert second.wait(timeout=5) != 0
        output = out.read_text(errors="replace")
        assert output.strip() == (
            f"fedrec: port {running.port} on 127.0.0.1 is in use (Address already in use); "
            "stop the other server or choose --port."
        )
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=10)
        running.stop(grace=1.0)


def test_start_server_refuses_a_taken_port_before_loading_any_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = make_served(tmp_path)
    holder = ModelHolder(served.models, served.state, ServingOptions())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"^port {port} on 127.0.0.1 is in use \("):
            start_server(holder, port=port)
        checks = iter([None])  # the race: free when checked, taken when gRPC binds
        real = service.bind_error
        monkeypatch.setattr(service, "bind_error", lambda h, p: next(checks, real(h, p)))
        with pytest.raises(PortInUseError, match=rf"^port {port} on 127.0.0.1 is in use \("):
            start_server(holder, port=port)
        monkeypatch.undo()
    assert holder.current() is None  # nothing half-started: no model was loaded
    with pytest.raises(PortInUseError, match=r"cannot listen on 192\.0\.2\.1:\d+ .* --host"):
        start_server(holder, host="192.0.2.1", port=19999)  # TEST-NET: not this machine's
