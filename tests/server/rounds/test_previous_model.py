"""A warm start takes the earlier run's global model, item rows matched by key."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from common.config import RunConfig, parse_run_config, to_run_config
from common.constants import FEDERATION_FILE, GLOBAL_MODEL_FILE, RUN_CATALOG_FILE
from common.data.catalog import ItemCatalog
from common.errors import ConfigError
from common.models.base import build_model
from server.rounds.previous_model import check_previous, item_rows, warm_parameters
from server.rounds.start import initial_arrays

BEFORE = ItemCatalog(keys=("a", "b", "c", "d"))
AFTER = ItemCatalog(keys=("e", "d", "b", "a", "f"))  # c dropped; e, f new; order changed


def _shared(run: RunConfig, items: int, seed: int) -> dict[str, torch.Tensor]:
    model = build_model(
        run.model, num_users=0, num_items=items, generator=torch.Generator().manual_seed(seed)
    )
    return {n: p.detach().clone() for n, p in model.shared_parameters().items()}


def _finished_run(directory: Path, run: RunConfig) -> dict[str, torch.Tensor]:
    directory.mkdir(parents=True)
    shared = _shared(run, len(BEFORE), seed=1)
    torch.save(shared, directory / GLOBAL_MODEL_FILE)
    BEFORE.save(directory / RUN_CATALOG_FILE)
    (directory / FEDERATION_FILE).write_text(json.dumps({"config": to_run_config(run)}))
    return shared


def _run(tmp_path: Path, **settings: object) -> RunConfig:
    catalog = tmp_path / "catalog.txt"
    catalog.write_text("\n".join(AFTER.keys) + "\n")
    return parse_run_config({"embedding-dim": 8, "catalog": str(catalog), **settings})


@pytest.mark.parametrize("model", ["mf", "history"])
def test_items_are_matched_by_key_and_the_rest_is_carried(tmp_path: Path, model: str) -> None:
    earlier = _run(tmp_path, model=model)
    old = _finished_run(tmp_path / "monday", earlier)
    run = dataclasses.replace(earlier, init_from=str(tmp_path / "monday"))
    fresh = _shared(run, len(AFTER), seed=2)
    warm, summary = warm_parameters(run, fresh, AFTER)

    rows = item_rows(run.model)
    assert rows  # every model here has item-indexed parameters
    for name, value in warm.items():
        if name not in rows:
            torch.testing.assert_close(value, old[name])  # not indexed by item: carried
            continue
        for key in AFTER.keys:
            new_at = AFTER.keys.index(key)
            if key in BEFORE.keys:
                torch.testing.assert_close(value[new_at], old[name][BEFORE.keys.index(key)])
            else:  # a new item keeps this run's seeded initialisation
                torch.testing.assert_close(value[new_at], fresh[name][new_at])
        for pad in range(rows[name]):  # the padding rows follow the items
            torch.testing.assert_close(value[len(AFTER) + pad], old[name][len(BEFORE) + pad])
    assert (summary.items_carried, summary.items_new, summary.items_dropped) == (3, 2, 1)
    assert "3 items carried, 2 new, 1 dropped" in summary.describe()


def test_initial_arrays_warm_starts_from_the_run_config(tmp_path: Path) -> None:
    earlier = _run(tmp_path)
    old = _finished_run(tmp_path / "monday", earlier)
    cold, none = initial_arrays(earlier)
    warm, summary = initial_arrays(dataclasses.replace(earlier, init_from=str(tmp_path / "monday")))
    assert none is None and summary is not None and summary.items_carried == 3
    warm_items = warm.to_torch_state_dict()["item_embedding.weight"]
    cold_items = cold.to_torch_state_dict()["item_embedding.weight"]
    torch.testing.assert_close(warm_items[AFTER.keys.index("a")], old["item_embedding.weight"][0])
    torch.testing.assert_close(warm_items[0], cold_items[0])  # "e" is new: seeded as cold


def test_another_model_is_refused_with_the_settings_that_differ(tmp_path: Path) -> None:
    _finished_run(tmp_path / "monday", _run(tmp_path))
    run = _run(tmp_path, **{"embedding-dim": 16, "init-from": str(tmp_path / "monday")})
    with pytest.raises(ConfigError, match="embedding-dim: 8 -> 16"):
        warm_parameters(run, _shared(run, len(AFTER), seed=2), AFTER)


def test_not_a_finished_run_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path)
    settings = to_run_config(run)
    with pytest.raises(ConfigError, match="is not a directory"):
        check_previous(tmp_path / "nowhere", settings)
    _finished_run(tmp_path / "monday", run)
    (tmp_path / "monday" / RUN_CATALOG_FILE).unlink()
    with pytest.raises(ConfigError, match="has no catalog.json"):
        check_previous(tmp_path / "monday", settings)
    (tmp_path / "tuesday").mkdir()
    with pytest.raises(ConfigError, match="federation.json is missing or unreadable"):
        check_previous(tmp_path / "tuesday", settings)


def test_a_run_without_a_catalog_cannot_match_items(tmp_path: Path) -> None:
    earlier = _run(tmp_path)
    _finished_run(tmp_path / "monday", earlier)
    run = dataclasses.replace(earlier, init_from=str(tmp_path / "monday"))
    with pytest.raises(ConfigError, match="needs its catalog"):
        warm_parameters(run, _shared(run, len(AFTER), seed=2), None)


def test_a_statistics_model_has_nothing_to_warm_start() -> None:
    with pytest.raises(ConfigError, match="nothing to start from"):
        parse_run_config(
            {
                "model": "ease",
                "privacy-unit": "user",
                "target-epsilon": 3.0,
                "num-server-rounds": 1,
                "init-from": "runs/monday",
            }
        )
