"""The deployment catalog exchange: every merchant encodes its log through one catalog.

Before anything else a deployment sends the federation catalog to every
merchant, which confirms it by its digest; a merchant that connects mid-run
(new, or back after a restart) gets the catalog before it trains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.config import FederationConfig
from common.constants import CATALOG_ACTION, CATALOG_DIGEST_FIELD, CATALOG_ITEMS_FIELD, CATALOG_KEY
from common.data.catalog import ItemCatalog, catalog_digest
from server.rounds import transport
from server.rounds.records import FederationError
from server.rounds.replies import merchant_of, split

if TYPE_CHECKING:
    from flwr.app import Message
    from flwr.serverapp import Grid

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


@dataclass
class CatalogState:
    """Which nodes confirmed the catalog (``ready``) and which answered it with an error."""

    ready: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)


def send_catalog(
    grid: Grid,
    nodes: list[int],
    catalog: ItemCatalog,
    *,
    timeout: float,
    poll: float,
    refused: set[int] | None = None,
) -> dict[int, str]:
    """Deployment set-up: every merchant encodes its log through the federation catalog.

    Returns node -> merchant name for the merchants that confirmed this catalog;
    nodes that answered with an error or another digest are added to ``refused``
    (a node that did not answer in time is in neither: it may still be starting).
    """
    from flwr.app import ConfigRecord, Message, RecordDict

    digest = catalog_digest(catalog.keys)
    record = ConfigRecord(
        {CATALOG_ITEMS_FIELD: list(catalog.keys), CATALOG_DIGEST_FIELD: digest}  # type: ignore[dict-item]
    )
    messages = [
        Message(
            content=RecordDict({CATALOG_KEY: record}),
            dst_node_id=node,
            message_type=f"query.{CATALOG_ACTION}",
        )
        for node in nodes
    ]
    received = transport.send_and_receive(grid, messages, timeout=timeout, poll=poll)
    replies, failed = split(received)
    if refused is not None:  # errors from the merchant itself (not the SuperLink's "unavailable")
        refused.update(
            r.metadata.src_node_id
            for r in received
            if r.has_error() and r.metadata.src_node_id in set(nodes)
        )
    names: dict[int, str] = {}
    for reply in replies:
        confirmed = reply.content.config_records.get(CATALOG_KEY)
        if confirmed is None or confirmed.get(CATALOG_DIGEST_FIELD) != digest:
            failed.append(f"{merchant_of(reply)} did not confirm the catalog")
            if refused is not None:
                refused.add(reply.metadata.src_node_id)
            continue
        names[reply.metadata.src_node_id] = merchant_of(reply)
    for failure in failed:
        logger.warning("catalog set-up: %s", failure)
    if not names:
        raise FederationError(
            f"No merchant accepted the federation catalog ({'; '.join(failed) or 'no replies'})."
        )
    logger.info("catalog of %d items sent; %d merchant(s) ready", len(catalog), len(names))
    return names


def confirm_catalog(
    grid: Grid,
    nodes: list[int],
    catalog: ItemCatalog,
    state: CatalogState,
    names: dict[int, str],
    *,
    federation: FederationConfig,
    poll: float,
) -> None:
    """Send the catalog to ``nodes``, then to newcomers until ``min-nodes`` merchants confirmed.

    A node Flower still lists (e.g. a merchant's stale session after a coordinator
    restart: the SuperLink answers "unavailable" for it) may not answer: the run
    starts once min-nodes merchants confirmed, or node-wait-timeout passes; it
    fails only if by then no merchant confirmed.
    """
    failures: list[str] = []

    def send(pending: list[int], timeout: float) -> None:
        try:
            confirmed = send_catalog(
                grid, pending, catalog, timeout=timeout, poll=poll, refused=state.refused
            )
        except FederationError as error:  # nobody confirmed this time: stale nodes, say
            failures.append(str(error))
            time.sleep(1.0)  # not a tight loop over nodes the SuperLink says are gone
            return
        names.update(confirmed)
        state.ready.update(confirmed)

    send(nodes, federation.round_timeout)
    deadline = time.monotonic() + federation.node_wait_timeout
    while len(state.ready) < federation.min_nodes and time.monotonic() < deadline:
        pending = [n for n in grid.get_node_ids() if n not in state.ready | state.refused]
        if not pending and not state.ready and failures:
            break  # every listed merchant answered with an error: no point waiting
        if not pending:
            time.sleep(1.0)
            continue
        send(pending, max(1.0, min(federation.round_timeout, deadline - time.monotonic())))
    if not state.ready:
        raise FederationError(
            f"No merchant confirmed the federation catalog within node-wait-timeout "
            f"({federation.node_wait_timeout:g} s)"
            + (f"; last: {failures[-1]}" if failures else ".")
        )


def admit_late_joiners(
    grid: Grid,
    messages: list[Message],
    state: CatalogState,
    names: dict[int, str],
    catalog: ItemCatalog,
    *,
    federation: FederationConfig,
    poll: float,
) -> list[Message]:
    """A merchant that connects mid-run (new, or back after a restart) gets the catalog first.

    It then trains from the current global model like everyone else. A node
    that answered the catalog with an error is not asked again (it would hold
    every round up to its timeout); one that did not answer in time (still
    starting, or offline) sits this round out and is asked again next round.
    """
    fresh = [
        m.metadata.dst_node_id
        for m in messages
        if m.metadata.dst_node_id not in state.ready and m.metadata.dst_node_id not in state.refused
    ]
    if not fresh:
        return [m for m in messages if m.metadata.dst_node_id in state.ready]
    try:
        confirmed = send_catalog(
            grid,
            fresh,
            catalog,
            timeout=federation.round_timeout,
            poll=poll,
            refused=state.refused,
        )
    except FederationError as error:
        logger.warning("late merchant(s) left out of this round: %s", error)
        confirmed = {}
    for name in confirmed.values():
        logger.info("%s joined the running federation; it starts from the current model", name)
    names.update(confirmed)
    state.ready.update(confirmed)
    return [m for m in messages if m.metadata.dst_node_id in state.ready]
