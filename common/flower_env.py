"""The environment every Flower process fedrec runs or starts gets (simulation and deployment).

Offline and quiet: no runtime dependency installation (it would reach the
network), no telemetry, no update check. Deployments also shorten Flower's
SuperExec task poll (default 1 s) so a message starts its ClientApp sooner.
"""

from __future__ import annotations

import os
from typing import Final

FLOWER_ENV: Final = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    # Flower's default is 1 s; a value set by the caller wins (benchmarks compare both).
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": os.environ.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"),
    "OMP_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
}


def with_flower_commands(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this Python's scripts directory first on ``PATH``.

    Flower's SuperLink and SuperNode start ``flower-superexec``, ``flwr-serverapp``
    and ``flwr-clientapp`` by name; without an activated virtual environment they
    would not be found (or another installation's would be).
    """
    import sys
    from pathlib import Path

    scripts = str(Path(sys.executable).parent)
    return {**env, "PATH": scripts + os.pathsep + env.get("PATH", "")}


def set_flower_environment() -> None:
    """Apply :data:`FLOWER_ENV` to this process (children inherit it)."""
    for key, value in FLOWER_ENV.items():
        if key.startswith("OMP_"):
            os.environ.setdefault(key, value)
        else:
            os.environ[key] = value
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
