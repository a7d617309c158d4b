"""A real federation on 127.0.0.1 for end-to-end tests: coordinator + merchants as processes.

Everything runs through the ``fedrec`` command exactly as an operator and
merchants would type it. Every process is started in its own process group,
bounded in time and always stopped (SIGTERM, then SIGKILL) by :meth:`close`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from simulations.synthetic import SyntheticSpec, generate_federation

FEDREC = str(Path(sys.executable).with_name("fedrec"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_federation_data(
    root: Path, *, merchants: list[str], users: int, items: int, seed: int
) -> None:
    """One CSV per merchant (``NAME.csv``) plus the federation catalog (one key per line)."""
    events = generate_federation(
        SyntheticSpec(num_merchants=len(merchants), num_users=users, num_items=items, seed=seed)
    )
    assert events.merchant_id is not None
    for synthetic, name in zip(sorted(set(events.merchant_id)), merchants, strict=True):
        rows = events.merchant_id == synthetic
        lines = ["user_id,item_id,timestamp"] + [
            f"{u},{i},{t}"
            for u, i, t in zip(
                events.user_id[rows], events.item_id[rows], events.timestamp[rows], strict=True
            )
        ]
        (root / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "items.txt").write_text("\n".join(sorted(set(events.item_id))) + "\n")


@dataclass
class Federation:
    root: Path
    merchants: list[str]
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def coord(self) -> Path:
        return self.root / "coord"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def state(self, name: str) -> Path:
        return self.root / "state" / name

    def log(self, label: str) -> Path:
        return self.root / "logs" / f"{label}.log"

    def fedrec(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FEDREC, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def spawn(self, label: str, *args: str) -> subprocess.Popen[bytes]:
        self.log(label).parent.mkdir(parents=True, exist_ok=True)
        handle = self.log(label).open("ab")
        process = subprocess.Popen(
            [FEDREC, *args], stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        self.processes[label] = process
        return process

    def wait_for_log(self, label: str, text: str, *, timeout: float, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = (
                self.log(label).read_text(errors="replace") if self.log(label).exists() else ""
            )
            if text in content[after:]:
                return
            process = self.processes.get(label)
            if process is not None and process.poll() is not None:
                raise AssertionError(f"{label} exited ({process.returncode}): {content[-2000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{label}: no {text!r} within {timeout} s: {self.tail(label)}")

    def tail(self, label: str, chars: int = 3000) -> str:
        path = self.log(label)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    # --- the operator ---------------------------------------------------------------------
    def init(self) -> None:
        write_federation_data(self.root, merchants=self.merchants, users=540, items=90, seed=3)
        done = self.fedrec(
            "coordinator", "init", str(self.coord), "--san", "127.0.0.1", "--san", "localhost",
            "--host", "127.0.0.1", "--port", str(self.port), "--catalog",
            str(self.root / "items.txt"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout
        for name in self.merchants:
            keys = self.root / "keys" / name
            assert self.fedrec("merchant", "keygen", str(keys)).returncode == 0
            admitted = self.fedrec(
                "coordinator", "admit", str(self.coord), name, str(keys / "node.key.pub")
            )
            assert admitted.returncode == 0, admitted.stderr

    def start_coordinator(self, *extra: str) -> None:
        before = self.log("coordinator").stat().st_size if self.log("coordinator").exists() else 0
        self.spawn("coordinator", "coordinator", "start", str(self.coord), *extra)
        self.wait_for_log("coordinator", "coordinator serving on", timeout=60, after=before)

    # --- merchants --------------------------------------------------------------------------
    def join(self, name: str, *extra: str, ca: Path | None = None, key: Path | None = None) -> None:
        self.spawn(
            name,
            "merchant", "join", "--coordinator", self.address,
            "--ca", str(ca or self.coord / "tls" / "ca.pem"),
            "--operator-key", str(self.coord / "operator.pub"),
            "--key", str(key or self.root / "keys" / name),
            "--data", str(self.root / f"{name}.csv"),
            "--state", str(self.state(name)), "--name", name, *extra,
        )  # fmt: skip

    def start(self) -> None:
        """Init, start the coordinator, join every merchant and wait until each SuperNode runs."""
        self.init()
        self.start_coordinator()
        for name in self.merchants:
            self.join(name)
        for name in self.merchants:
            self.wait_for_log(name, "SuperNode started; waiting for runs", timeout=60)

    def kill(self, label: str) -> None:
        """SIGKILL a party and every process it started (a crash: nothing signs off)."""
        process = self.processes[label]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        self._kill_supernode(label, signal.SIGKILL)
        process.wait(timeout=10)

    def _kill_supernode(self, label: str, sig: int) -> None:
        pid_file = self.state(label) / "supernode.pid"
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pid_file.read_text().strip()), sig)

    def stop(self, label: str) -> None:
        process = self.processes[label]
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._kill_supernode(label, signal.SIGKILL)

    def close(self) -> None:
        for label in [m for m in self.processes if m != "coordinator"] + ["coordinator"]:
            if label in self.processes:
                self.stop(label)

    # --- runs ---------------------------------------------------------------------------------
    def run(
        self, name: str, *args: str, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        return self.fedrec("run", str(self.coord), "--name", name, *args, timeout=timeout)

    def progress(self, run: str) -> dict[str, object]:
        path = self.coord / "runs" / run / "progress.json"
        try:
            payload: dict[str, object] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return payload

    def wait_for_round(self, run: str, done: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(self.progress(run).get("rounds", 0)) >= done:  # type: ignore[call-overload]
                return
            time.sleep(0.2)
        raise AssertionError(
            f"run {run}: round {done} not done in {timeout} s: {self.progress(run)}"
        )


@contextlib.contextmanager
def started(root: Path, merchants: list[str]) -> Iterator[Federation]:
    """A started federation (coordinator and every merchant), always closed afterwards."""
    fed = Federation(root=root, merchants=merchants)
    try:
        fed.start()
        yield fed
    finally:
        fed.close()
