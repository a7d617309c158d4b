"""`--ray-address`: the same experiment on an existing Ray cluster (a head on 127.0.0.1).

Slow (starts a Ray head, about a minute): ``make test-slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = """
[experiment]
name = "on-a-cluster"
[data]
merchants = 2
users = 200
items = 80
[run]
num-server-rounds = 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, "the Ray head exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the Ray head did not listen on 127.0.0.1:{port} within {seconds} s")


def test_an_experiment_runs_on_an_existing_ray_cluster(tmp_path: Path) -> None:
    port = _free_port()
    # Ray's unix sockets live under --temp-dir and must fit in 107 bytes: a short path
    temp = Path(tempfile.mkdtemp(prefix="fedrec-ray-", dir="/tmp"))
    ray = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray),
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
            "--temp-dir",
            str(temp),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for_port(port, head, 120)
        path = tmp_path / "exp.toml"
        path.write_text(EXPERIMENT, encoding="utf-8")
        out = tmp_path / "out"
        address = f"127.0.0.1:{port}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "simulations.cli",
                "experiment",
                "run",
                str(path),
                "--out",
                str(out),
                "--ray-address",
                address,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        metrics = json.loads((out / "cells" / "base" / "seed-0" / "metrics.json").read_text())
        assert metrics["federated"]["overall"]["ndcg@10"] > 0
        # the driver joined the head's cluster rather than starting its own
        sessions = list(temp.glob("session_*"))
        assert sessions, "no Ray session under the head's --temp-dir"
        assert any(any((s / "logs").glob("worker-*")) for s in sessions)
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # the head and every Ray process it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
    left = _processes_mentioning(str(temp), wait=20)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)
    assert not left, f"Ray processes outlived the head: {left}"


def _processes_mentioning(text: str, *, wait: float) -> list[int]:
    deadline = time.monotonic() + wait
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if text in cmdline:
                    found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
