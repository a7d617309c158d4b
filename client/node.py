"""Which merchant a node is, from its node config; and what the node's process has cost.

No Flower here: the ClientApp passes ``context.node_config`` (a plain mapping).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from client.merchant import Merchant
from client.state.store import MerchantStore
from common.config import RunConfig
from common.constants import NODE_PARTITION_ID, NODE_STATE_DIR
from common.errors import ConfigError


def state_dir(node_config: Mapping[str, Any]) -> Path | None:
    """A deployed merchant's state (``fedrec merchant join --state``); None when simulated."""
    state = node_config.get(NODE_STATE_DIR)
    return Path(str(state)) if state else None


def resolve_merchant(config: RunConfig, node_config: Mapping[str, Any]) -> Merchant:
    """This node's merchant: its ``state-dir`` (deployment), or its ``partition-id`` directory
    under ``merchants-dir`` (simulation)."""
    state = state_dir(node_config)
    if state is not None:
        return Merchant(MerchantStore(state), config.model, seed=config.federation.seed)
    if not config.merchants_dir:
        raise ConfigError(
            "merchants-dir is not set: the ClientApp needs prepared merchant directories. "
            "Run `fedrec simulate` (it prepares them) or pass --run-config merchants-dir=DIR."
        )
    root = Path(config.merchants_dir)
    merchants = merchant_dirs(root)
    partition = int(node_config.get(NODE_PARTITION_ID, 0))
    if partition >= len(merchants):
        raise ConfigError(
            f"partition-id {partition} has no merchant directory in {root} "
            f"({len(merchants)} found); run as many SuperNodes as merchants."
        )
    name = merchants[partition]
    keys = Path(config.merchant_keys_dir) / name if config.merchant_keys_dir else None
    return Merchant(
        MerchantStore(root / name, key_dir=keys), config.model, seed=config.federation.seed
    )


def merchant_dirs(root: Path) -> tuple[str, ...]:
    """Sorted names of the merchant directories under ``root`` (none if it is not a folder).

    Listed once per process while ``root`` is unchanged (same mtime and link count): with
    thousands of one-user clients, listing on every message made each call O(clients).
    """
    try:
        stat = root.stat()
    except OSError:
        return ()
    return _listing(str(root), stat.st_mtime_ns, stat.st_nlink)


@functools.lru_cache(maxsize=8)
def _listing(root: str, mtime_ns: int, nlink: int) -> tuple[str, ...]:
    if not os.path.isdir(root):
        return ()
    with os.scandir(root) as entries:
        return tuple(sorted(entry.name for entry in entries if entry.is_dir()))


def process_age() -> float:
    """Seconds since this process started (Linux /proc; -1 elsewhere): its start-up cost."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            started_ticks = float(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(float(x.split()[1]) for x in handle if x.startswith("btime"))
        return time.time() - (boot + started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return -1.0
