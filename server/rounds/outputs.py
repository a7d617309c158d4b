"""What a finished run leaves in its output directory.

``global_model.pt`` holds the shared parameters only; ``federation.json`` the
per-round, per-merchant history; ``item_prior.npz`` the public item prior;
``catalog.json`` the catalog the run trained on (a later run warm-started
from this one matches items by key through it).
"""

from __future__ import annotations

import json
from pathlib import Path

from common.config import RunConfig, to_run_config
from common.constants import (
    FEDERATION_FILE,
    GLOBAL_MODEL_FILE,
    ITEM_PRIOR_FILE,
    RUN_CATALOG_FILE,
)
from common.data.catalog import ItemCatalog
from common.fileio import atomic_write_text
from server.rounds.previous_model import WarmStart
from server.rounds.records import FederationResult


def save_catalog(output: Path, catalog: ItemCatalog | None) -> None:
    """Keep the catalog a deployed run sends merchants, as read at its start (a simulation
    writes its own): the coordinator's file may change before a later run warm-starts."""
    if catalog is not None:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / RUN_CATALOG_FILE, catalog.to_json())


def save_outputs(
    output: Path, run: RunConfig, result: FederationResult, *, warm: WarmStart | None = None
) -> None:
    """Write the global model, the item prior (if any) and the run's history."""
    import torch

    output.mkdir(parents=True, exist_ok=True)
    torch.save(dict(result.arrays.to_torch_state_dict()), output / GLOBAL_MODEL_FILE)
    if result.prior is not None:
        import numpy as np

        np.savez(output / ITEM_PRIOR_FILE, counts=result.prior.counts, trained=result.prior.trained)
    history = {
        "config": to_run_config(run),
        "rounds": [record.to_json() for record in result.rounds],
        "privacy": result.privacy,
        "client_privacy": result.client_privacy,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "warm_start": None if warm is None else warm.to_json(),
        "trained_items": None if result.prior is None else len(result.prior.trained),
    }
    atomic_write_text(output / FEDERATION_FILE, json.dumps(history, indent=2))
