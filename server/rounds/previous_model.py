"""Warm start: a retrain's round-0 model is the global model of an earlier run.

A federation that retrains (nightly, weekly) on logs that grew since the
last run need not start from a random model: ``init-from=DIR`` (``fedrec run
--from-run NAME``) starts from the shared parameters DIR's run published.
Items are matched by key through the two runs' catalogs, so a catalog that
gained or lost items still warm-starts: a kept item keeps its rows, a new
item gets the seeded initialisation, a dropped item's rows are left behind.
Parameters not indexed by item (an MLP, attention blocks, a global bias) are
carried as they are.

Privacy: the earlier global model was already sent to every merchant of that
run and was accounted for then; starting from it releases nothing new. The
new run's releases are accounted in each merchant's lifetime account like
any other run's (:mod:`common.privacy.accountant`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import RunConfig
from common.config_keys import KEYS
from common.constants import FEDERATION_FILE, GLOBAL_MODEL_FILE, RUN_CATALOG_FILE
from common.data.catalog import ItemCatalog
from common.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from common.models.config import ModelConfig


@dataclass(frozen=True)
class WarmStart:
    """What a warm start carried over, for the run's history and the operator's log."""

    source: str  # the earlier run's directory
    items_carried: int  # items in both catalogs: their rows come from the earlier model
    items_new: int  # items only in this run's catalog: seeded initialisation
    items_dropped: int  # items only in the earlier catalog: left behind

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "items-carried": self.items_carried,
            "items-new": self.items_new,
            "items-dropped": self.items_dropped,
        }

    def describe(self) -> str:
        return (
            f"warm start from {self.source}: {self.items_carried} items carried, "
            f"{self.items_new} new, {self.items_dropped} dropped"
        )


def _model_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The kebab-case settings that shape the model (its section of the run config)."""
    return {key: settings[key] for key, (section, _) in KEYS.items() if section == "model"}


def _previous_settings(directory: Path) -> dict[str, Any]:
    path = directory / FEDERATION_FILE
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"init-from={directory}: {path} is missing or unreadable ({exc}); init-from needs "
            "the directory of a finished run (it holds global_model.pt, federation.json and "
            "catalog.json)."
        ) from exc


def _check_same_model(directory: Path, previous: dict[str, Any], current: dict[str, Any]) -> None:
    before, now = _model_settings(previous), _model_settings(current)
    differ = sorted(key for key in now if key in before and before[key] != now[key])
    if differ:
        changes = ", ".join(f"{k}: {before[k]!r} -> {now[k]!r}" for k in differ)
        raise ConfigError(
            f"init-from={directory} trained another model ({changes}); a warm start needs the "
            "same model settings. Use that run's settings, or start without init-from."
        )


def item_rows(config: ModelConfig) -> dict[str, int]:
    """Shared parameter → rows past the items (a padding row), for the item-indexed ones.

    Found by building the model at two catalog sizes: a parameter whose first
    dimension follows the catalog is indexed by item (padding rows come last).
    """
    import torch

    from common.models.base import build_model

    def shapes(items: int) -> dict[str, tuple[int, ...]]:
        model = build_model(
            config, num_users=0, num_items=items, generator=torch.Generator().manual_seed(0)
        )
        return {n: tuple(p.shape) for n, p in model.shared_parameters().items()}

    small, large = shapes(2), shapes(3)
    return {n: small[n][0] - 2 for n in small if small[n] != large[n]}


def check_previous(directory: Path, settings: dict[str, Any]) -> None:
    """Refuse a warm start from anything but a finished run of the same model."""
    if not directory.is_dir():
        raise ConfigError(
            f"init-from={directory} is not a directory; give the directory of a finished run "
            "(fedrec run --from-run NAME finds DIR/runs/NAME)."
        )
    _check_same_model(directory, _previous_settings(directory), settings)
    for name in (GLOBAL_MODEL_FILE, RUN_CATALOG_FILE):
        if not (directory / name).is_file():
            raise ConfigError(
                f"init-from={directory} has no {name}: it is not a finished run (or one from "
                "before runs kept their catalog). Start this run without init-from."
            )


def warm_parameters(
    run: RunConfig,
    fresh: dict[str, torch.Tensor],
    catalog: ItemCatalog | None,
) -> tuple[dict[str, torch.Tensor], WarmStart]:
    """``fresh`` (this run's seeded round-0 parameters) overwritten from ``run.init_from``."""
    import torch

    from common.config import to_run_config

    directory = Path(run.init_from)
    check_previous(directory, to_run_config(run))
    if catalog is None:
        raise ConfigError(
            "init-from matches items by key, so this run needs its catalog: set catalog=FILE or "
            "merchants-dir beside a catalog.json (num-items alone names no keys)."
        )
    before = ItemCatalog.load(directory / RUN_CATALOG_FILE)
    shared = torch.load(directory / GLOBAL_MODEL_FILE, weights_only=True)
    rows = item_rows(run.model)
    if set(shared) != set(fresh):
        raise ConfigError(
            f"init-from={directory}: its global model has parameters {sorted(shared)}, this "
            f"model {sorted(fresh)}; start without init-from."
        )
    position = torch.as_tensor(catalog.encode(list(before.keys)).indices)
    kept = position >= 0
    source_rows, target_rows = torch.nonzero(kept).flatten(), position[kept]
    out: dict[str, torch.Tensor] = {}
    for name, init in fresh.items():
        old = shared[name].to(init.dtype)
        if name in rows:
            extra = rows[name]
            expected = (len(before) + extra, *init.shape[1:])
            if tuple(old.shape) != expected:
                raise ConfigError(
                    f"init-from={directory}: {name} has shape {tuple(old.shape)}, expected "
                    f"{expected} for its catalog of {len(before)} items; the run is damaged."
                )
            value = init.clone()
            value[target_rows] = old[source_rows]
            if extra:
                value[len(catalog) :] = old[len(before) :]
        else:
            if old.shape != init.shape:
                raise ConfigError(
                    f"init-from={directory}: {name} has shape {tuple(old.shape)}, this model "
                    f"{tuple(init.shape)}; a warm start needs the same model settings."
                )
            value = old.clone()
        out[name] = value
    carried = int(kept.sum())
    return out, WarmStart(
        source=str(directory),
        items_carried=carried,
        items_new=len(catalog) - carried,
        items_dropped=len(before) - carried,
    )
