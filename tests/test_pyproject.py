"""The Flower app config in pyproject.toml declares every run setting, with the defaults.

`flwr run --run-config` only accepts keys declared there, so a setting missing from
pyproject cannot be set under Flower's CLI at all.
"""

import tomllib
from pathlib import Path

from common.config import RunConfig, parse_run_config, to_run_config

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_flower_app_config_declares_every_setting_with_its_default():
    app = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]
    declared = app["config"]
    assert set(declared) == set(to_run_config(RunConfig()))
    assert parse_run_config(declared) == RunConfig()
    assert app["components"] == {
        "serverapp": "server.server_app:app",
        "clientapp": "client.client_app:app",
    }
