"""The Control API client: stopping a run that already finished is not an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.ops.flwr_cli import ControlError, FlowerCli


def _cli(monkeypatch: pytest.MonkeyPatch, answer: str, tmp_path: Path) -> FlowerCli:
    def call(self: FlowerCli, *args: str, **_: Any) -> dict[str, Any]:
        raise ControlError(f"`flwr {' '.join(args)}` failed: {answer}")

    monkeypatch.setattr(FlowerCli, "call", call)
    return FlowerCli(home=tmp_path, address="127.0.0.1:1", ca=tmp_path / "ca.pem")


def test_stopping_a_finished_run_is_left_alone_other_failures_are_raised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    finished = "Stopping run ID 7... [code: 18] Run is already finished."
    _cli(monkeypatch, finished, tmp_path).stop(7)  # the run ended while being stopped
    with pytest.raises(ControlError, match="not found"):
        _cli(monkeypatch, "Run ID 7 not found", tmp_path).stop(7)
