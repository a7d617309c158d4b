"""`flwr run` never trains the merchants of a finished simulation (their ledgers are its record)."""

import dataclasses

import pytest

from common.config import RunConfig
from common.errors import ConfigError
from server.rounds.start import check_merchants_dir


def _run(merchants_dir: str) -> RunConfig:
    return dataclasses.replace(RunConfig(), merchants_dir=merchants_dir)


def test_the_merchants_of_a_finished_run_are_refused_with_the_copy_to_make(tmp_path):
    demo = tmp_path / "runs" / "demo"
    (demo / "merchants" / "m000").mkdir(parents=True)
    (demo / "metrics.json").write_text("{}")

    with pytest.raises(ConfigError) as refused:
        check_merchants_dir(_run(str(demo / "merchants")))

    said = str(refused.value)
    assert "belongs to the finished run" in said and str(demo) in said
    assert "data.npz and users.json" in said and "catalog.json" in said


def test_a_copy_and_a_run_in_progress_are_trained(tmp_path):
    copy = tmp_path / "runs" / "demo-copy"
    (copy / "merchants").mkdir(parents=True)
    (copy / "catalog.json").write_text("{}")

    check_merchants_dir(_run(str(copy / "merchants")))  # no metrics.json: not a finished run
    check_merchants_dir(_run(""))  # deployment: merchants bring their own state
