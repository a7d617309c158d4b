"""Admission: waiting until enough merchants are connected."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from server.rounds.records import FederationError

if TYPE_CHECKING:
    from flwr.serverapp import Grid


def wait_for_nodes(grid: Grid, *, min_nodes: int, timeout: float, poll: float = 0.5) -> list[int]:
    """Block until ``min_nodes`` nodes are connected, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= min_nodes:
            return nodes
        if time.monotonic() >= deadline:
            raise FederationError(
                f"Only {len(nodes)} merchant(s) connected after {timeout:.0f} s; the federation "
                f"needs at least {min_nodes}. Start more merchants or lower min-nodes."
            )
        time.sleep(poll)
