"""The simulated merchants: their state directories, and refusals before any training.

``prepare_merchants`` splits events into merchants and writes each one's
state directory (events, users, DP-noise key, optional budget) beside the
federation catalog. The checks refuse, before anything runs, a log or a
partition with nobody to evaluate and a delta too large for some merchant.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.config import RunConfig
from common.constants import (
    MERCHANT_DATA_FILE,
    MERCHANT_USERS_FILE,
    MERCHANTS_DIR,
    RUN_CATALOG_FILE,
)
from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData, build_user_item_data, count_evaluable_users
from common.data.partition import PartitionConfig, partition_events
from common.data.schema import Interactions
from common.errors import ConfigError, DataError, DataProblem


def prepare_merchants(
    events: Interactions,
    partition: PartitionConfig,
    root: Path,
    *,
    seed: int = 0,
    budgets: dict[str, float] | None = None,
    extra_items: tuple[str, ...] = (),
) -> tuple[ItemCatalog, dict[str, UserItemData]]:
    """Write the catalog and one state directory per merchant under ``root``.

    Each merchant also gets a DP-noise key derived from ``seed`` (so research
    runs repeat exactly; a real merchant's key is random) and, if listed in
    ``budgets``, its own ``policy.json`` with ``epsilon-max``.
    """
    import hashlib

    from client.state.store import MerchantStore

    catalog = ItemCatalog.from_keys(
        np.concatenate([events.item_id, np.asarray(extra_items, object)])
    )
    root.mkdir(parents=True, exist_ok=True)
    catalog.save(root / RUN_CATALOG_FILE)
    merchants: dict[str, UserItemData] = {}
    for name, rows in partition_events(events, partition).items():
        data = build_user_item_data(events.take(rows), catalog)
        directory = root / MERCHANTS_DIR / name
        data.save(directory, data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
        store = MerchantStore(directory)
        store.write_noise_key(hashlib.sha256(f"simulation-noise:{seed}:{name}".encode()).digest())
        if budgets and name in budgets:
            store.write_policy(epsilon_max=budgets[name])
        merchants[name] = data
    unknown = sorted(set(budgets or {}) - set(merchants))
    if unknown:
        raise ConfigError(
            f"Budgets were given for merchants that do not exist: {', '.join(unknown)} "
            f"(merchants: {', '.join(sorted(merchants))})."
        )
    return catalog, merchants


_HOLD_OUT_HINT = (
    "leave-last-out evaluation holds out each user's latest item and needs at least one user "
    "with 2 or more distinct items; add events (users with a single item only train)"
)


def check_evaluable(events: Interactions, *, source: str) -> None:
    """Refuse before any work when no user has a test item to hold out."""
    evaluable = count_evaluable_users(events)
    if evaluable == 0:
        raise DataError(
            source,
            [
                DataProblem(
                    None,
                    f"no user has 2 or more distinct items ({len(events)} event(s), "
                    f"{events.num_users} user(s), {events.num_items} item(s)), so no test item "
                    "can be held out and nothing could be evaluated (expected at least 1 user "
                    "with 2 distinct items)",
                )
            ],
            hint=_HOLD_OUT_HINT,
        )


def check_merchants_evaluable(merchants: dict[str, UserItemData], *, source: str) -> None:
    """Refuse before training when the partition left no merchant a test user."""
    if any(len(data.test_users) for data in merchants.values()):
        return
    raise DataError(
        source,
        [
            DataProblem(
                None,
                f"after partitioning into {len(merchants)} merchant(s) no merchant has a user "
                "with 2 or more distinct items, so nothing could be evaluated (expected at "
                "least 1 such user at some merchant)",
            )
        ],
        hint=_HOLD_OUT_HINT,
    )


def check_privacy_feasible(run: RunConfig, merchants: dict[str, UserItemData]) -> None:
    """Refuse before anything runs if the model cannot be trained privately, or if delta is
    not below 1/examples at some merchant."""
    if not run.privacy.merchant_dp:
        return
    from client.training.private import private_population
    from common.models.registry import model_class
    from common.privacy.accountant import suggest_delta

    probe = model_class(run.model.kind)(run.model, num_users=1, num_items=1)  # tiny, unfitted
    if (problem := probe.clipping_problem()) is not None:
        raise ConfigError(
            f"privacy-unit={run.privacy.unit} needs exact per-user clipping: {problem}"
        )

    unit = run.privacy.unit
    counts = {name: len(private_population(data, unit)) for name, data in merchants.items()}
    short = {name: n for name, n in sorted(counts.items()) if n == 0 or run.privacy.delta >= 1 / n}
    if short:
        problems = [f"{name} has {n} {unit}s" for name, n in short.items()]
        positive = [n for n in short.values() if n > 0]
        example = suggest_delta(min(positive)) if positive else "1e-7"
        raise ConfigError(
            f"delta {run.privacy.delta:g} must be below 1/({unit}s at each merchant): "
            f"{'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}. Lower it with "
            f"--delta (in an experiment file: delta under [privacy]), e.g. --delta {example}, "
            "or use fewer, larger merchants."
        )
