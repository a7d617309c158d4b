"""Warm ClientApp processes: the launcher runs Flower's flwr-clientapp forked from the zygote."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from client.deploy.warm_start import SOCKET_FILE, write_launcher


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_the_launcher_runs_flwr_clientapp_in_a_forked_child_with_its_own_streams(tmp_path):
    launcher = write_launcher(tmp_path) / "flwr-clientapp"
    cold = subprocess.run([str(launcher), "--help"], capture_output=True, text=True, timeout=60)
    assert cold.returncode == 0 and "--token" in cold.stdout  # no zygote: the real command runs
    zygote = subprocess.Popen(
        [sys.executable, "-m", "client.deploy.warm_start", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(tmp_path / SOCKET_FILE)
        assert (tmp_path / SOCKET_FILE).stat().st_mode & 0o077 == 0  # only this user may ask
        warm = subprocess.run([str(launcher), "--help"], capture_output=True, text=True, timeout=60)
        assert warm.returncode == 0 and "--token" in warm.stdout  # same output, via the fork
        bad = subprocess.run(
            [str(launcher), "--no-such-flag"], capture_output=True, text=True, timeout=60
        )
        assert bad.returncode == 2 and "--token" in bad.stderr  # exit status and stderr pass back
    finally:
        os.killpg(zygote.pid, signal.SIGTERM)
        assert zygote.wait(timeout=10) == -signal.SIGTERM


def test_the_zygote_ends_when_the_merchant_process_dies(tmp_path):
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-m', "
            f"'client.deploy.warm_start', {str(tmp_path)!r}], start_new_session=True); "
            "print(p.pid, flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    zygote = int(starter.stdout.readline())
    _wait_for(tmp_path / SOCKET_FILE)
    starter.kill()  # the merchant process dies without cleaning up
    starter.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(zygote, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(zygote, signal.SIGKILL)
        raise AssertionError("the zygote outlived the merchant process")
    assert not (tmp_path / SOCKET_FILE).exists()
