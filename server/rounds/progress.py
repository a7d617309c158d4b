"""``RUN/progress.json``: where a run stands, for ``fedrec run`` to follow on the coordinator.

Rewritten atomically after every round: rounds done of planned, the last
round's wall time, failures and refusals, the mean of the merchants'
evaluation metrics when there were any, and finally ``finished``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_text

PROGRESS_FILE = "progress.json"


class Progress:
    def __init__(self, path: Path, *, total: int, done: int = 0) -> None:
        self.path = path
        self.state: dict[str, Any] = {
            "total": total,
            "rounds": done,
            "resumed_from": done,
            "status": "running",
            "started": time.time(),
            "last": {},
        }
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state, indent=2))

    def round(self, record: Any) -> None:
        metrics: dict[str, float] = {}
        for values in record.evaluate.values():
            for key, value in values.items():
                metrics.setdefault(key, 0.0)
                metrics[key] += value / len(record.evaluate)
        self.state["rounds"] = record.round
        self.state["last"] = {
            "round": record.round,
            "seconds": record.seconds,
            "trained": sorted(record.train),
            "failures": record.failures,
            "refused": sorted(record.refused),
            "evaluation": metrics,
        }
        self._write()

    def finish(self, stopped_early: str) -> None:
        self.state["status"] = "finished"
        self.state["stopped_early"] = stopped_early
        self._write()

    def fail(self, reason: str) -> None:
        self.state["status"] = "failed"
        self.state["error"] = reason
        self._write()


def read_progress(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None
