"""A coordinator port in use: one sentence naming it, found before the start or after it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.errors import ExitCode
from common.ports import PortInUseError
from server.ops import superlink
from server.ops.coordinator import CoordinatorDir
from server.ops.listeners import SuperLinkLog
from server.ops.operations import init_coordinator

ROOT = Path(__file__).resolve().parents[3]
FEDREC = str(Path(sys.executable).with_name("fedrec"))
NGINX = shutil.which("nginx", path="/usr/sbin:/sbin:/usr/bin:/bin")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (.ci/run does)")


def _free_pair() -> int:
    """A port whose successor is free too (the public port and the SuperLink's)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port < 65535:
                with socket.socket() as second:
                    try:
                        second.bind(("127.0.0.1", port + 1))
                    except OSError:
                        continue
                    return port
    raise AssertionError("no two adjacent free ports on 127.0.0.1")


@contextmanager
def _taken(port: int) -> Iterator[None]:
    """Another process's listener on 127.0.0.1:port (a plain TCP socket: no TLS)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield


def _coordinator(root: Path) -> CoordinatorDir:
    return init_coordinator(root / "coord", sans=["127.0.0.1"], host="127.0.0.1", port=_free_pair())


@needs_nginx
@pytest.mark.parametrize("which", ["internal", "public"])
def test_coordinator_start_on_a_port_in_use_says_so_in_one_plain_sentence(
    tmp_path: Path, which: str
) -> None:
    directory = _coordinator(tmp_path)
    settings = directory.settings()
    port = settings.internal_port if which == "internal" else settings.port
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with _taken(port):
        done = subprocess.run(
            [FEDREC, "coordinator", "start", str(directory.root)],
            capture_output=True, text=True, timeout=120, env=env, check=False,
        )  # fmt: skip
    assert done.returncode == ExitCode.CONFIG, done.stdout + done.stderr
    error = done.stderr.strip()
    assert error.startswith(f"fedrec: port {port} is in use: "), error
    assert error.endswith(f"set {'internal-port' if which == 'internal' else 'port'} in "
                          f"{directory.config_path} to a free port.")  # fmt: skip
    assert "(Address already in use)" in error
    assert error.count("\n") == 0 and error.count(". ") == 0  # one line, one sentence
    assert "\x1b" not in done.stdout + done.stderr
    assert "lifespan" not in done.stdout + done.stderr
    assert not directory.pid_file.exists()


@needs_nginx
def test_a_superlink_whose_port_is_taken_after_the_check_is_explained_by_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _coordinator(tmp_path)
    internal = directory.settings().internal_port
    monkeypatch.setattr(superlink, "check_ports_free", lambda d: None)  # the race: free, then not
    said: list[str] = []
    started = time.monotonic()
    with _taken(internal), pytest.raises(PortInUseError) as refused:
        superlink.run_coordinator(directory, say=said.append, start_timeout=60)
    message = str(refused.value)
    assert message.startswith(
        f"port {internal} is in use: the SuperLink (Fleet, Control and ServerAppIo APIs) cannot "
        f"listen on 127.0.0.1:{internal} ([Errno 98] error while attempting to bind on address "
        f"('127.0.0.1', {internal}): address already in use); "
    ), message
    assert "\x1b" not in message and "lifespan" not in message
    assert time.monotonic() - started < 60  # the exit was noticed, not waited out
    assert said == ["coordinator stopped"]
    assert not directory.pid_file.exists()


@needs_nginx
def test_a_proxy_whose_port_is_taken_after_the_check_says_which_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _coordinator(tmp_path)
    public = directory.settings().port
    monkeypatch.setattr(superlink, "check_ports_free", lambda d: None)
    with _taken(public), pytest.raises(PortInUseError) as refused:
        superlink.run_coordinator(directory, say=lambda _: None, start_timeout=60)
    message = str(refused.value)
    assert message.startswith(
        f"port {public} is in use: nginx (the public proxy, Fleet API only) cannot listen on "
        f"127.0.0.1:{public} (bind() to 127.0.0.1:{public} failed (98: Address already in use)); "
    ), message
    assert not directory.pid_file.exists()


def test_the_log_summary_drops_colour_codes_and_flower_s_shutdown_lines(tmp_path: Path) -> None:
    directory = _coordinator(tmp_path)
    directory.logs.mkdir(parents=True, exist_ok=True)
    log = directory.logs / "superlink.log"
    log.write_text("an earlier start: ERROR old\n")
    since = SuperLinkLog.from_end(directory)
    with log.open("a") as handle:
        handle.write(
            "\x1b[92mINFO \x1b[0m:      Starting Flower SuperLink\n"
            "\x1b[91mERROR \x1b[0m:     Database locked\n"
            "\x1b[92mINFO \x1b[0m:      SuperLinkLifespan: stop\n"
            "\x1b[92mINFO \x1b[0m:      FastAPI lifespan: shutdown\n"
            "2026-12-07T01:21:44.887Z INFO [uvicorn.error] Application shutdown complete.\n"
        )
    failure = since.failure("The SuperLink exited (code 1) while starting")
    assert str(failure) == (
        f"The SuperLink exited (code 1) while starting: ERROR :     Database locked; its log: {log}"
    )
    assert not isinstance(failure, PortInUseError)


@pytest.mark.parametrize(
    ("given", "used"), [(None, "INFO"), ("WARNING", "INFO"), ("DEBUG", "DEBUG")]
)
def test_the_superlink_logs_at_info_or_finer_so_its_bind_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, used: str
) -> None:
    if given is None:
        monkeypatch.delenv("FLWR_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("FLWR_LOG_LEVEL", given)
    env = superlink.superlink_environment(_coordinator(tmp_path))
    assert env.get("FLWR_LOG_LEVEL", "INFO") == used
