"""Cross-device mode (one user per client): client-level DP by Flower's wrapper and accountant."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import rdp
from rich.console import Console

from common.config import parse_run_config
from common.data.partition import PartitionConfig
from simulations.report import render_privacy
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec
from tests.integration.test_simulation import recording_mod

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def device_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    log_dir = root / "replies"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=parse_run_config(
            {
                "num-server-rounds": 3,
                "embedding-dim": 4,
                "local-epochs": 1,
                "privacy-unit": "client",
                "target-epsilon": 8.0,
                "target-delta": 1e-3,
                "fraction-train": 0.5,
                "client-clip": 0.5,
                "device-epsilon": 4.0,
            }
        ),
        source=DataSource(
            synthetic=SyntheticSpec(num_merchants=1, num_users=24, num_items=30, seed=4)
        ),
        partition=PartitionConfig(scheme="device"),
        run_dir=root / "run",
        baselines=False,
    )
    results = simulate(spec, client_mods=[recording_mod(log_dir)])
    import json

    replies = [json.loads(p.read_text()) for p in sorted(log_dir.glob("*-train-*.json"))]
    return results, replies


def test_client_level_epsilon_matches_an_independent_computation(device_run):
    results, _ = device_run
    level = results["privacy"]["client_level"]
    devices = len(results["merchants"])
    assert level["population"] == devices and level["sampled_per_round"] == devices // 2
    assert level["releases"] == 3 and level["clipping_norm"] == 0.5
    # No amplification: as if every device took part in all 3 Gaussian releases.
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(level["noise_multiplier"]), 3)
    assert level["epsilon"] == pytest.approx(accountant.get_epsilon(1e-3), rel=0.01)
    assert 7.9 <= level["epsilon"] <= 8.0  # sigma was calibrated to spend the target


def test_devices_send_uniform_weights_and_report_per_interaction_privacy(device_run):
    results, replies = device_run
    assert len(replies) == 3 * (len(results["merchants"]) // 2)
    for reply in replies:
        metrics = reply["metrics"]["metrics"]
        assert metrics["num-examples"] == 1  # Flower accounts only uniform FedAvg
        assert reply["configs"]["merchant"]["privacy-unit"] == "interaction"
        assert metrics["dp-epsilon"] <= 4.0 + 1e-9
    console = Console(record=True, width=200)
    render_privacy(results, console=console)
    text = console.export_text()
    assert "Client-level DP" in text and "no sampling amplification" in text
    assert "per-INTERACTION privacy only" in text
