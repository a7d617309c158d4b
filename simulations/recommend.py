"""Top-K recommendations for every user of a finished run, in the original keys.

Each merchant scores its own users with the global shared parameters and its
own local user parameters; items a user already interacted with (train or
held-out) are excluded. After a private run each merchant serves what it chose
on its held-out items (:mod:`common.source_choice`): the model, DP popularity
or a blend; the result says which, and why.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.state.store import MerchantStore
from common.config import parse_run_config
from common.constants import (
    GLOBAL_MODEL_FILE,
    ITEM_PRIOR_FILE,
    MERCHANTS_DIR,
    RUN_CATALOG_FILE,
    RUN_CONFIG_FILE,
)
from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData
from common.errors import ConfigError, RunDirError
from common.fileio import atomic_write_bytes
from common.models.base import build_model
from common.models.prior import ItemPrior
from common.source_choice import blend, popularity_scores, shared_fingerprint

logger = logging.getLogger(__name__)
HEADER = ("user_id", "item_id", "rank", "score")


def _require(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.exists():
        raise RunDirError(
            f"{run_dir} is not a complete fedrec run: {name} is missing. "
            "Point at a directory written by `fedrec simulate`."
        )
    return path


def _seen_mask(data: UserItemData, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) pairs to exclude for ``users``: training items and the held-out item."""
    indptr, items = data.train_csr(users)
    rows = np.repeat(np.arange(len(users)), np.diff(indptr))
    test_of = np.full(data.num_users, -1)
    test_of[data.test_users] = data.test_items
    held = test_of[users]
    has = held >= 0
    return (
        np.concatenate([rows, np.flatnonzero(has)]),
        np.concatenate([items, held[has]]),
    )


def load_item_prior(run_dir: Path) -> ItemPrior | None:
    """The run's public item prior (private runs), or ``None`` if it trained every item."""
    path = run_dir / ITEM_PRIOR_FILE
    if not path.is_file():
        return None
    with np.load(path) as payload:
        return ItemPrior(counts=payload["counts"], trained=payload["trained"])


@dataclass(frozen=True)
class Recommended:
    rows: int
    sources: dict[str, str]  # merchant -> what served its users, and why


def recommend_run(run_dir: Path, *, k: int, out: Path, chunk_users: int = 1024) -> Recommended:
    """Write ``user_id,item_id,rank,score`` for every user of every merchant."""
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}.")
    config_payload = json.loads(_require(run_dir, RUN_CONFIG_FILE).read_text(encoding="utf-8"))
    config = parse_run_config(config_payload["run"])
    catalog = ItemCatalog.load(_require(run_dir, RUN_CATALOG_FILE))
    shared = torch.load(_require(run_dir, GLOBAL_MODEL_FILE), weights_only=True)
    merchants = sorted(p for p in _require(run_dir, MERCHANTS_DIR).iterdir() if p.is_dir())
    prior = load_item_prior(run_dir)
    item_keys = np.asarray(catalog.keys, dtype=object)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    rows_written = 0
    sources: dict[str, str] = {}
    fingerprint = shared_fingerprint({n: t.numpy() for n, t in shared.items()})
    popularity = None if prior is None else popularity_scores(prior.counts)
    seen_users: set[str] = set()
    for directory in merchants:
        store = MerchantStore(directory)
        data = store.load_data()
        local = store.load_local()
        if local is None:
            raise RunDirError(f"{directory} has no trained local state; was the run complete?")
        model = build_model(
            config.model,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch.Generator().manual_seed(0),
        )
        model.bind(data)
        model.load_shared(shared)
        model.load_local(local)
        model.eval()
        duplicated = seen_users.intersection(data.user_keys)
        if duplicated:
            logger.warning(
                "%d user id(s) of %s also appear at another merchant; rows are ambiguous",
                len(duplicated),
                store.name,
            )
        seen_users.update(data.user_keys)
        choice = store.load_source_choice()
        weight = 0.0
        if choice is None or popularity is None:
            sources[store.name] = "serves the model"
        elif choice.model != fingerprint:
            sources[store.name] = (
                "serves the model (its serving-source choice is for another model)"
            )
        else:
            weight, sources[store.name] = choice.weight, choice.reason()
        for start in range(0, data.num_users, chunk_users):
            users = np.arange(start, min(start + chunk_users, data.num_users))
            with torch.no_grad():
                scores_t = model.score_all(torch.as_tensor(users))  # (n, items)
                scores = (prior.apply(scores_t) if prior is not None else scores_t).numpy()
            if weight > 0 and popularity is not None:
                scores = blend(scores, popularity, weight)
            rows, items = _seen_mask(data, users)
            scores[rows, items] = -np.inf
            top = min(k, data.num_items)
            best = np.argpartition(-scores, top - 1, axis=1)[:, :top]  # (n, top)
            best_scores = np.take_along_axis(scores, best, axis=1)
            order = np.argsort(-best_scores, axis=1, kind="stable")
            best = np.take_along_axis(best, order, axis=1)
            best_scores = np.take_along_axis(best_scores, order, axis=1)
            for i, user in enumerate(users):
                valid = np.isfinite(best_scores[i])
                for rank, (item, score) in enumerate(
                    zip(best[i][valid], best_scores[i][valid], strict=True), start=1
                ):
                    writer.writerow((data.user_keys[user], item_keys[item], rank, f"{score:.6f}"))
                    rows_written += 1
    atomic_write_bytes(out, buffer.getvalue().encode("utf-8"))
    return Recommended(rows_written, sources)
