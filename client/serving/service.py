"""``fedrec serve``: the gRPC Recommender service over a hot-reloadable :class:`ServingIndex`.

Requests take the current snapshot once and answer from it; a watcher thread
notices a newly published global model (``CURRENT`` or ``global_model.pt``
changing), builds the next snapshot off the request path and swaps the
reference. A request in flight finishes on the snapshot it started with, so
a reload drops nothing. A model that fails to load is logged and the
previous one keeps serving. The standard ``grpc.health.v1`` service says
SERVING once a model is loaded and NOT_SERVING while shutting down.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from client.serving.api import HEALTH_SERVICE, stubs
from client.serving.index import (
    FOLD_IN,
    PERSONAL,
    POPULARITY,
    SEQUENCE,
    ServingError,
    ServingIndex,
    ServingOptions,
)
from client.serving.model_dir import load_global_model, stamp
from common.errors import FedrecError
from common.ports import PortInUseError, bind_error, describe, in_use

logger = logging.getLogger(__name__)

PRIVACY_NOTE_GLOBAL = (
    "Global shared parameters as released by the federation (DP per user when the run was "
    "private); user vectors are fitted here from each user's own data and never leave."
)
PRIVACY_NOTE_PERSONAL = (
    "Shared parameters fine-tuned locally on this merchant's raw data (lambda={lam}); local-only, "
    "never sent or published. Recommendations from them are not covered by the federation's DP "
    "guarantee towards this merchant's other users."
)


class ModelHolder:
    """The snapshot being served, and how to replace it when a new model is published."""

    def __init__(self, model: Path, state: Path, options: ServingOptions) -> None:
        self.model = model
        self.state = state
        self.options = options
        self._index: ServingIndex | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()  # one reload at a time; requests never take it
        self.reloads = 0
        self.last_error: str | None = None

    def current(self) -> ServingIndex | None:
        return self._index

    def reload_if_changed(self) -> bool:
        """Load the model at ``self.model`` if it changed; True when a new snapshot is served."""
        with self._lock:
            now = stamp(self.model)
            if now is None or now == self._stamp:
                return False
            started = time.perf_counter()
            try:
                index = ServingIndex.build(load_global_model(self.model), self.state, self.options)
            except (FedrecError, OSError, ValueError, KeyError, RuntimeError) as error:
                if str(error) != self.last_error:
                    logger.error(
                        "model at %s not loaded, still serving the previous one: %s",
                        self.model,
                        error,
                    )
                self.last_error = str(error)
                return False
            index.warm_up()
            previous = self._index
            self._index, self._stamp, self.last_error = index, now, None
            if previous is not None:
                self.reloads += 1
            logger.info(
                "serving model %s (%.1f s to load)", index.version, time.perf_counter() - started
            )
            return True


def _strategy_enum(messages: Any, strategy: str) -> int:
    names = {
        PERSONAL: "PERSONAL",
        FOLD_IN: "FOLD_IN",
        POPULARITY: "POPULARITY",
        SEQUENCE: "RECENT_ITEMS",
    }
    return int(messages.Strategy.Value(names[strategy]))


def make_servicer(holder: ModelHolder) -> Any:
    """A ``RecommenderServicer`` answering from ``holder``'s current snapshot."""
    messages, services = stubs()

    def ready(context: grpc.ServicerContext) -> ServingIndex:
        index = holder.current()
        if index is None:
            context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"no model loaded yet from {holder.model}"
                + (f" ({holder.last_error})" if holder.last_error else "")
                + "; it is served as soon as one is published there.",
            )
        assert index is not None
        return index

    def fail(context: grpc.ServicerContext, error: ServingError) -> None:
        context.abort(getattr(grpc.StatusCode, error.status), str(error))

    class RecommenderServicer(services.RecommenderServicer):  # type: ignore[misc, name-defined]
        def Recommend(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            index = ready(context)
            try:
                result = index.recommend(
                    request.user_id,
                    int(request.k),
                    exclude_seen=request.exclude_seen,
                    recent=tuple(request.recent_item_ids),
                )
            except ServingError as error:
                fail(context, error)
            return messages.RecommendResponse(
                items=[messages.ScoredItem(item_id=i, score=s) for i, s in result.items],
                strategy=_strategy_enum(messages, result.strategy),
                unknown_item_ids=list(result.unknown_items),
                model_version=index.version,
                source=result.source,
            )

        def Similar(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            index = ready(context)
            try:
                items = index.similar(request.item_id, int(request.k))
            except ServingError as error:
                fail(context, error)
            return messages.SimilarResponse(
                items=[messages.ScoredItem(item_id=i, score=s) for i, s in items],
                model_version=index.version,
            )

        def Info(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
            index = ready(context)
            lam = index.options.personalisation
            return messages.InfoResponse(
                model_version=index.version,
                model_kind=index.kind,
                num_items=len(index.keys),
                num_trained_items=len(index.trained_items),
                num_users=index.data.num_users,
                personalisation_lambda=lam,
                popularity_source=index.popularity_source,
                privacy_note=(
                    PRIVACY_NOTE_PERSONAL.format(lam=lam)
                    if index.personalised
                    else PRIVACY_NOTE_GLOBAL
                ),
                max_k=index.max_k,
                reloads=holder.reloads,
                events_outside_catalog=index.data.unknown_items,
                serving_source=index.source_note,
            )

    return RecommenderServicer()


def refuse_taken_port(host: str, port: int, error: OSError | None) -> None:
    """A :class:`PortInUseError` naming the port and the fix when ``error`` says it is not free."""
    if error is None:
        return
    if in_use(error):
        raise PortInUseError(
            f"port {port} on {host} is in use ({describe(error)}); stop the other server "
            "or choose --port."
        )
    raise PortInUseError(
        f"cannot listen on {host}:{port} ({describe(error)}); pass an address of this machine "
        "as --host (127.0.0.1, or 0.0.0.0 for every interface)."
    )


@dataclass
class RunningServer:
    """A started server: its port, and how to stop it (health first, then in-flight grace)."""

    server: grpc.Server
    port: int
    holder: ModelHolder
    health: Any
    stop_event: threading.Event
    watcher: threading.Thread

    def stop(self, grace: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.stop_event.set()
        self.server.stop(grace).wait()
        self.watcher.join(timeout=5.0)


def start_server(
    holder: ModelHolder,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    workers: int = 8,
    reload_interval: float = 2.0,
    credentials: grpc.ServerCredentials | None = None,
    on_reload: Callable[[ServingIndex], None] | None = None,
) -> RunningServer:
    """Load the model if it is there, start serving on ``host:port`` and watch for new models."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    _, services = stubs()
    refuse_taken_port(host, port, bind_error(host, port))
    health_servicer = health.HealthServicer()
    # No SO_REUSEPORT: with gRPC's default a second server binds the same port and the
    # kernel splits the connections between the two (another merchant's model answers).
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 0)]
    )
    services.add_RecommenderServicer_to_server(make_servicer(holder), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{host}:{port}"
    try:
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except RuntimeError:  # grpcio >= 1.60 raises "Failed to bind to address ..."
        bound = 0
    if bound == 0:  # taken between the check and here: nothing was started
        server.stop(None)
        refuse_taken_port(
            host,
            port,
            bind_error(host, port) or OSError(errno.EADDRINUSE, "gRPC could not bind it"),
        )

    def set_status() -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if holder.current() is not None
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", HEALTH_SERVICE):
            health_servicer.set(name, status)

    holder.reload_if_changed()
    set_status()
    stop_event = threading.Event()

    def watch() -> None:
        while not stop_event.wait(reload_interval):
            if holder.reload_if_changed():
                set_status()
                index = holder.current()
                if on_reload is not None and index is not None:
                    on_reload(index)

    watcher = threading.Thread(target=watch, name="fedrec-model-watch", daemon=True)
    server.start()
    watcher.start()
    return RunningServer(server, bound, holder, health_servicer, stop_event, watcher)
