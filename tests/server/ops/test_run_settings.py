"""`fedrec run` layers its settings as `fedrec simulate` does (common.recipes.run_settings)."""

from __future__ import annotations

import pytest

from common.config import parse_run_config
from common.errors import ConfigError
from common.privacy.config import PRIVATE_DEFAULTS
from server.ops.commands import run_command_settings
from simulations.cli import build_parser


def _settings(*argv: str) -> dict[str, object]:
    return run_command_settings(build_parser().parse_args(["run", "coordinator", *argv]))


def test_epsilon_puts_the_dp_defaults_beneath_the_set_pairs_and_keeps_their_unit() -> None:
    settings = _settings("--epsilon", "3", "--set", "privacy-unit=interaction", "--set", "lr=x")
    assert settings["privacy-unit"] == "interaction"  # was forced to "user" before
    assert settings["target-epsilon"] == 3.0
    assert settings["embedding-dim"] == PRIVATE_DEFAULTS["embedding-dim"]
    assert settings["lr"] == "x"  # any pair passes through; parse_run_config judges it
    user = _settings("--epsilon", "3", "--set", "embedding-dim=24")
    assert user["privacy-unit"] == "user" and user["embedding-dim"] == "24"  # explicit wins
    run = parse_run_config(user)
    assert run.privacy.enabled and run.model.embedding_dim == 24


def test_flags_win_and_no_epsilon_means_no_dp_defaults() -> None:
    settings = _settings("--rounds", "7", "--set", "num-server-rounds=3", "--secagg")
    assert settings == {"num-server-rounds": 7, "secagg": True}
    history = parse_run_config(_settings("--model", "history"))
    assert history.federation.strategy == "fedavgm" and history.train.keep_optimizer_state
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE, got 'rounds'"):
        _settings("--set", "rounds")


def test_from_run_names_the_earlier_run_of_this_coordinator() -> None:
    settings = _settings("--from-run", "monday", "--rounds", "4", "--model", "mf")
    assert str(settings["init-from"]).endswith("coordinator/runs/monday")
    assert parse_run_config(settings).init_from == settings["init-from"]
    assert "init-from" not in _settings("--rounds", "4")
