"""The embedded default federation: federated MF must match the centralised model and
clearly beat popularity (issue 2 acceptance), measured on a real Flower simulation."""

from __future__ import annotations

import pytest

from common.config import RunConfig
from common.data.partition import PartitionConfig
from simulations.runner import DataSource, SimulationSpec, simulate

pytestmark = pytest.mark.integration


def test_default_federation_reaches_centralised_quality(tmp_path):
    spec = SimulationSpec(
        run=RunConfig(), source=DataSource(), partition=PartitionConfig(), run_dir=tmp_path / "r"
    )

    results = simulate(spec)

    federated = results["federated"]["overall"]["ndcg@10"]
    centralised = results["centralised"]["overall"]["ndcg@10"]
    popularity = results["popularity"]["overall"]["ndcg@10"]
    assert federated >= 0.9 * centralised, (federated, centralised)
    assert federated >= 2.0 * popularity, (federated, popularity)
    assert len(results["merchants"]) == 10
