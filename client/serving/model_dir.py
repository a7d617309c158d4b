"""A global model on the merchant's disk: read it, publish a new version, notice a change.

A *model directory* has the layout of a finished run: ``global_model.pt``
(shared parameters), ``config.json`` (``{"run": settings}``), ``catalog.json``
and, after a private run, ``item_prior.npz`` and the merchant's
``serving_source.json`` (what it serves with this model,
:mod:`common.source_choice`). ``fedrec simulate`` writes one;
a merchant in a deployment publishes one per evaluated global model into
``STATE/models/`` (a versions directory): each version is written completely
under a temporary name, then ``CURRENT`` is replaced atomically to point at it,
so a reader never sees half a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.config import RunConfig, parse_run_config
from common.constants import (
    GLOBAL_MODEL_FILE,
    ITEM_PRIOR_FILE,
    MERCHANT_MODELS_DIR,
    MERCHANT_SOURCE_CHOICE_FILE,
    RUN_CATALOG_FILE,
    RUN_CONFIG_FILE,
)
from common.data.catalog import ItemCatalog
from common.errors import ConfigError, RunDirError
from common.fileio import atomic_write_text
from common.models.prior import ItemPrior
from common.source_choice import SourceChoice

CURRENT_FILE = "CURRENT"  # in a versions directory: the name of the version being served
MODELS_DIR = MERCHANT_MODELS_DIR  # the versions directory inside a merchant's state
KEEP_VERSIONS = 2


@dataclass(frozen=True)
class GlobalModel:
    """Everything the federation released that serving needs."""

    directory: Path
    version: str  # first 12 hex digits of the SHA-256 of global_model.pt
    run: RunConfig
    shared: dict[str, torch.Tensor]
    catalog: ItemCatalog
    prior: ItemPrior | None
    choice: SourceChoice | None = None  # what the merchant serves with it (published beside it)


def resolve(path: Path) -> Path:
    """The model directory ``path`` names: itself, or the version its ``CURRENT`` points at."""
    pointer = path / CURRENT_FILE
    if pointer.is_file():
        return path / pointer.read_text(encoding="utf-8").strip()
    return path


def stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a new model is published at ``path`` (``None``: nothing there yet)."""
    watched = path / CURRENT_FILE if (path / CURRENT_FILE).is_file() else path / GLOBAL_MODEL_FILE
    try:
        info = watched.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def _missing(directory: Path, name: str) -> RunDirError:
    return RunDirError(
        f"{directory} is not a fedrec model directory: {name} is missing. Point --model at a "
        f"run directory written by `fedrec simulate`, or at STATE/{MODELS_DIR} of a merchant "
        "that took part in a deployment."
    )


def load_global_model(path: Path) -> GlobalModel:
    """Read a model directory (or the current version of a versions directory)."""
    directory = resolve(path)
    for name in (GLOBAL_MODEL_FILE, RUN_CONFIG_FILE, RUN_CATALOG_FILE):
        if not (directory / name).is_file():
            raise _missing(directory, name)
    payload = (directory / GLOBAL_MODEL_FILE).read_bytes()
    try:
        config = json.loads((directory / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
        settings = config["run"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunDirError(
            f"{directory / RUN_CONFIG_FILE}: expected a JSON object with the run's settings "
            f'under "run" ({exc}).'
        ) from exc
    import io

    shared = torch.load(io.BytesIO(payload), weights_only=True)
    prior = None
    if (directory / ITEM_PRIOR_FILE).is_file():
        with np.load(directory / ITEM_PRIOR_FILE) as arrays:
            prior = ItemPrior(counts=arrays["counts"], trained=arrays["trained"])
    choice = None
    if (directory / MERCHANT_SOURCE_CHOICE_FILE).is_file():
        path = directory / MERCHANT_SOURCE_CHOICE_FILE
        try:
            choice = SourceChoice.from_json(
                json.loads(path.read_text(encoding="utf-8")), where=str(path)
            )
        except (ValueError, ConfigError) as exc:
            raise RunDirError(f"{path}: not a readable serving-source choice ({exc}).") from exc
    return GlobalModel(
        directory=directory,
        version=hashlib.sha256(payload).hexdigest()[:12],
        run=parse_run_config(settings),
        shared=dict(shared),
        catalog=ItemCatalog.load(directory / RUN_CATALOG_FILE),
        prior=prior,
        choice=choice,
    )


def publish(
    versions: Path,
    *,
    settings: dict[str, Any],
    shared: dict[str, torch.Tensor],
    catalog: ItemCatalog,
    prior: ItemPrior | None,
    label: str,
    choice: SourceChoice | None = None,
) -> Path:
    """Write a new version under ``versions`` and point ``CURRENT`` at it; returns its path.

    ``label`` names the version (e.g. ``run-round``); older versions beyond the
    last :data:`KEEP_VERSIONS` are removed after the switch.
    """
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / label
    staging = versions / f".{label}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        torch.save({n: t.detach().clone() for n, t in shared.items()}, staging / GLOBAL_MODEL_FILE)
        (staging / RUN_CONFIG_FILE).write_text(json.dumps({"run": settings}), encoding="utf-8")
        catalog.save(staging / RUN_CATALOG_FILE)
        if prior is not None:
            np.savez(staging / ITEM_PRIOR_FILE, counts=prior.counts, trained=prior.trained)
        if choice is not None:
            (staging / MERCHANT_SOURCE_CHOICE_FILE).write_text(choice.dumps(), encoding="utf-8")
        for child in staging.iterdir():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(versions / CURRENT_FILE, label)
    kept = sorted(
        (p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime_ns,
    )
    for old in kept[:-KEEP_VERSIONS]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final
