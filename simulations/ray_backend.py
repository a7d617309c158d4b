"""Flower's Simulation Engine on Ray: probe the address, start Ray, run the apps, stop Ray.

Ray failing to start, or the engine stopping, becomes one
:class:`SimulationBackendError` naming its cause at once, instead of a
ServerApp that waits a whole round-timeout for nodes that never come.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from common.config import RunConfig
from common.errors import ConfigError, FedrecError

RAY_PROBE_SECONDS = 5.0
START_ATTEMPTS = 3  # a local Ray node that misses its start-up wait is started again
logger = logging.getLogger(__name__)
_ENGINE_FAILED = "An error was encountered. Ending simulation."  # flwr's run_simulation


class SimulationBackendError(FedrecError):
    """Ray, the Simulation Engine's backend, could not start or stopped."""


class _DropRunSimulationDeprecation(logging.Filter):
    """``run_simulation`` is Flower's in-process entry point; its deprecation notice is known."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


def check_ray_address(address: str, *, timeout: float = RAY_PROBE_SECONDS) -> None:
    """Refuse within ``timeout`` when a ``HOST:PORT`` Ray address does not accept connections.

    ``ray.init`` itself retries an unreachable address for minutes, while the
    ServerApp waits its round-timeout for nodes that never come.
    """
    import socket

    if not address or address == "auto" or "://" in address:
        return  # "auto" and ray:// client addresses are Ray's own to resolve
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"ray-address must be HOST:PORT (e.g. 127.0.0.1:6379) or 'auto', got {address!r}."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(
            f"Cannot reach the Ray cluster at ray-address {address} ({reason}, within "
            f"{timeout:g} s). Start it there (`ray start --head --port {port}`), fix the "
            "address, or leave ray-address empty to start Ray on this machine."
        ) from exc


def start_ray(init_args: dict[str, Any]) -> None:
    """Start (or connect to) Ray the way Flower's RayBackend does, before any thread exists.

    A failure here is reported with its cause at once; inside ``run_simulation``
    it would leave the ServerApp waiting a whole round-timeout first.
    """
    import sys

    import ray

    from common.models.registry import MODELS_ENVIRONMENT

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(sys.path)  # as flwr's RayBackend.init_ray
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    env_vars = {"PYTHONPATH": pythonpath}
    if os.environ.get(MODELS_ENVIRONMENT):  # models registered outside the tree
        env_vars[MODELS_ENVIRONMENT] = os.environ[MODELS_ENVIRONMENT]
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                ray.init(runtime_env={"env_vars": env_vars}, **init_args)
                break
            except Exception as exc:  # noqa: BLE001 (Ray raises many kinds)
                if attempt == START_ATTEMPTS or "address" in init_args:
                    raise
                # A loaded machine can miss Ray's fixed 30 s raylet start-up wait; a local
                # node is started afresh (a cluster address is never retried).
                logger.warning("Ray did not start (%s); starting it again", exc)
                ray.shutdown()
    except Exception as exc:  # Ray raises many kinds (RuntimeError, ConnectionError, ...)
        text = str(exc).strip()
        cause = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
        raise SimulationBackendError(
            f"Ray could not start, so the simulation cannot run: {type(exc).__name__}: {cause}. "
            "Rerun with --verbose for Ray's log; check free memory and /tmp space, or point "
            "ray-address at a running cluster."
        ) from exc


def run_flower(
    run: RunConfig,
    *,
    num_merchants: int,
    on_round: Callable[[Any], None] | None,
    mods: Sequence[Any],
    verbose: bool = False,
    num_cpus: int = 0,
    ray_address: str = "",
) -> None:
    """Run the deployment's ServerApp and ClientApp under the Simulation Engine.

    ``num_cpus`` 0 is all cores; ``ray_address`` names an existing Ray cluster
    (``HOST:PORT`` or ``auto``), "" starts one here.
    """
    from flwr.simulation import run_simulation

    from client.client_app import make_client_app
    from server.server_app import make_server_app

    init_args: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
    }
    if ray_address:  # the cluster has its own resources; Ray refuses them from a driver
        init_args["address"] = ray_address
    else:
        init_args.update(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=0)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": init_args,
    }
    check_ray_address(ray_address)
    flower_logger = logging.getLogger("flwr")
    quiet = _DropRunSimulationDeprecation()
    flower_logger.addFilter(quiet)
    try:
        start_ray({"include_dashboard": False, **init_args})
        try:
            run_simulation(
                server_app=make_server_app(run, on_round=on_round),
                client_app=make_client_app(run, mods=mods),
                num_supernodes=num_merchants,
                backend_config=backend_config,  # type: ignore[arg-type]
                verbose_logging=verbose,
            )
        except RuntimeError as exc:
            if str(exc) != _ENGINE_FAILED:
                raise
            root = _root_cause(exc)
            raise SimulationBackendError(
                f"The Simulation Engine stopped: {type(root).__name__}: {str(root).rstrip('.')}. "
                "Rerun with --verbose for Flower's and Ray's log."
            ) from exc
    finally:
        flower_logger.removeFilter(quiet)
        stop_ray()


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def stop_ray() -> None:
    """Shut Ray down if the run left it up (Flower's backend stops it only once it was built)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
