"""EASE's one DP co-occurrence release summed under SecAgg+ (Ray): the same global Gram as
plain aggregation, within the quantisation step, and no merchant's Gram seen alone."""

from __future__ import annotations

import pytest
import torch

from common.config import parse_run_config
from common.data.partition import PartitionConfig
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec
from tests.integration.test_simulation import recording_mod

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIP_RANGE = 1000.0  # above any Gram entry of these merchants (a merchant refuses otherwise)
SETTINGS = {
    "model": "ease",
    "ease-items": 40,
    "num-server-rounds": 1,
    "privacy-unit": "user",
    "target-epsilon": 4.0,
    "target-delta": 1e-4,
    "count-epsilon-share": 0.5,
    "min-nodes": 3,
    "secagg-clip-range": CLIP_RANGE,
}
SOURCE = DataSource(synthetic=SyntheticSpec(num_merchants=3, num_users=300, num_items=60, seed=4))


def _run(root, *, secagg: bool):
    log_dir = root / f"replies-{secagg}"
    log_dir.mkdir()
    spec = SimulationSpec(
        run=parse_run_config({**SETTINGS, "secagg": secagg}),
        source=SOURCE,
        partition=PartitionConfig(scheme="natural"),
        run_dir=root / f"run-{secagg}",
        baselines=False,
    )
    simulate(spec, client_mods=[recording_mod(log_dir)])
    return torch.load(root / f"run-{secagg}" / "global_model.pt"), log_dir


def test_the_secure_mean_gram_equals_the_plain_one_within_the_quantisation_step(tmp_path):
    plain, _ = _run(tmp_path, secagg=False)
    secure, log_dir = _run(tmp_path, secagg=True)
    assert torch.equal(plain["items"], secure["items"])
    # each value quantised to 2 x CLIP_RANGE / 2^22 (unbiased rounding), then averaged
    step = 2 * CLIP_RANGE / (1 << 22)
    assert float((plain["gram"] - secure["gram"]).abs().max()) < 2 * step
    assert float(plain["gram"].abs().max()) > 100 * step  # not trivially equal
    sent = [p.read_text() for p in sorted(log_dir.glob("*-train-*.json"))]
    assert sent and all("arrays/gram" not in text for text in sent)  # masked shares only
