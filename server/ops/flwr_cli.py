"""The coordinator's use of Flower's own ``flwr`` command (Control API): register, run, status.

Flower 1.41 exposes SuperNode registration and run submission only through
its Control API, which the ``flwr`` CLI speaks. fedrec calls that CLI with a
private ``FLWR_HOME`` holding one connection (``fedrec``: the local SuperLink,
TLS with the federation CA) and reads its ``--format json`` answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ExitCode, FedrecError
from common.fileio import atomic_write_text

CONNECTION = "fedrec"


class ControlError(FedrecError):
    """The SuperLink's Control API refused or could not be reached."""

    exit_code = ExitCode.CONTROL_FAILED


def flower_environment(home: Path) -> dict[str, str]:
    """The environment every Flower process fedrec starts gets: offline, quiet, fast polling."""
    from common.flower_env import FLOWER_ENV, with_flower_commands

    return with_flower_commands({**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home)})


def _flwr() -> str:
    return str(Path(sys.executable).with_name("flwr"))


@dataclass(frozen=True)
class FlowerCli:
    home: Path
    address: str
    ca: Path

    def write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.home / "config.toml",
            "[superlink]\n"
            f'default = "{CONNECTION}"\n\n'
            f"[superlink.{CONNECTION}]\n"
            f"address = {json.dumps(self.address)}\n"
            f"root-certificates = {json.dumps(str(self.ca.resolve()))}\n",
        )

    def call(self, *args: str, timeout: float = 60.0) -> dict[str, Any]:
        """Run ``flwr ARGS --format json``; its JSON answer, or a ControlError with the reason."""
        self.write_config()
        command = [_flwr(), *args, "--format", "json"]
        try:
            done = subprocess.run(
                command,
                env=flower_environment(self.home),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ControlError(
                f"`flwr {' '.join(args)}` did not answer within {timeout:.0f} s; is the "
                "coordinator running (`fedrec coordinator start DIR`)?"
            ) from exc
        payload = _last_json(done.stdout)
        if payload is None or not payload.get("success", False):
            reason = (payload or {}).get("error-message") or (done.stderr or done.stdout).strip()
            raise ControlError(f"`flwr {' '.join(args)}` failed: {_short(reason)}")
        return payload

    def register(self, public_key: Path, *, name: str) -> int:
        answer = self.call("supernode", "register", str(public_key), CONNECTION, "--name", name)
        return int(answer["node-id"])

    def unregister(self, node_id: int) -> None:
        self.call("supernode", "unregister", str(node_id), CONNECTION)

    def nodes(self) -> list[dict[str, Any]]:
        answer = self.call("supernode", "ls", CONNECTION)
        nodes = answer.get("nodes", [])
        return list(nodes) if isinstance(nodes, list) else []

    def submit(self, app: Path, *, config_file: Path) -> int:
        answer = self.call(
            "run", str(app), CONNECTION, "--run-config", str(config_file), timeout=120.0
        )
        return int(answer["run-id"])

    def status(self, run_id: int) -> tuple[str, str]:
        """(status, details) of a run, e.g. ("finished:completed", "")."""
        answer = self.call("ls", CONNECTION, "--run-id", str(run_id))
        runs = answer.get("runs", [])
        if not runs:
            return "unknown", ""
        return str(runs[0].get("status", "unknown")), str(runs[0].get("status-details", ""))

    def stop(self, run_id: int) -> None:
        """Stop the run; one that already finished (it may end while being stopped) is left."""
        try:
            self.call("stop", str(run_id), CONNECTION)
        except ControlError as exc:
            if "already finished" not in str(exc):
                raise


def _last_json(text: str) -> dict[str, Any] | None:
    """The JSON object in ``flwr``'s output (it may print other lines before it)."""
    start = text.find("{")
    while start != -1:
        try:
            value = json.loads(text[start:])
            return value if isinstance(value, dict) else None
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return None


def _short(reason: str) -> str:
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    return " ".join(lines[-3:])[:500] or "no reason given"
