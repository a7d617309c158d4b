"""Ray failing to start ends `fedrec simulate` at once, with its cause (no Ray started here)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from common.config import RunConfig
from common.data.partition import PartitionConfig
from common.errors import ConfigError, FedrecError
from simulations import ray_backend
from simulations.ray_backend import SimulationBackendError, check_ray_address
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_a_closed_ray_address_is_refused_with_the_address_and_the_fix() -> None:
    port = _closed_port()
    with pytest.raises(ConfigError) as caught:
        check_ray_address(f"127.0.0.1:{port}", timeout=2.0)
    assert str(caught.value) == (
        f"Cannot reach the Ray cluster at ray-address 127.0.0.1:{port} (Connection refused, "
        f"within 2 s). Start it there (`ray start --head --port {port}`), fix the address, or "
        "leave ray-address empty to start Ray on this machine."
    )


@pytest.mark.parametrize("address", ["localhost", "host:port", "host:0", ":6379"])
def test_a_malformed_ray_address_is_refused(address: str) -> None:
    with pytest.raises(ConfigError, match="ray-address must be HOST:PORT"):
        check_ray_address(address)


@pytest.mark.parametrize("address", ["", "auto", "ray://head:10001"])
def test_addresses_ray_resolves_itself_are_not_probed(address: str) -> None:
    check_ray_address(address)  # returns without a connection attempt


def test_simulate_with_a_closed_ray_address_fails_before_training(tmp_path: Path) -> None:
    # Prepare
    port = _closed_port()
    spec = SimulationSpec(
        run=RunConfig(),
        source=DataSource(synthetic=SyntheticSpec(num_merchants=2, num_users=40, num_items=20)),
        partition=PartitionConfig(scheme="natural", num_parties=2),
        run_dir=tmp_path / "run",
        ray_address=f"127.0.0.1:{port}",
    )
    # Execute
    with pytest.raises(ConfigError, match="Cannot reach the Ray cluster at ray-address 127"):
        simulate(spec)
    # Assert: nothing written
    assert not (tmp_path / "run").exists()
    assert not (tmp_path / "run.incomplete").exists()


def test_ray_init_failure_becomes_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def broken_init(**kwargs: object) -> None:
        raise RuntimeError("Failed to start the GCS server.\nlong Ray log follows")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", broken_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(SimulationBackendError) as caught:
        ray_backend.start_ray({"num_cpus": 1})
    assert isinstance(caught.value, FedrecError)
    assert str(caught.value).startswith(
        "Ray could not start, so the simulation cannot run: RuntimeError: Failed to start the "
        "GCS server. Rerun with --verbose"
    )


def test_a_crashed_simulation_engine_reports_its_root_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flwr.simulation
    import ray

    def crashed(**kwargs: object) -> None:
        try:
            try:
                raise OSError("actor pool could not be created")
            except OSError as inner:
                raise RuntimeError("Simulation Runtime crashed.") from inner
        except RuntimeError as middle:
            raise RuntimeError("An error was encountered. Ending simulation.") from middle

    monkeypatch.setattr(flwr.simulation, "run_simulation", crashed)
    monkeypatch.setattr(ray_backend, "start_ray", lambda init_args: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    spec = SimulationSpec(
        run=RunConfig(),
        source=DataSource(),
        partition=PartitionConfig(scheme="natural", num_parties=2),
        run_dir=tmp_path / "run",
    )
    with pytest.raises(SimulationBackendError) as caught:
        ray_backend.run_flower(
            RunConfig(),
            num_merchants=2,
            on_round=None,
            mods=(),
            verbose=spec.verbose,
            num_cpus=spec.num_cpus,
            ray_address=spec.ray_address,
        )
    assert str(caught.value) == (
        "The Simulation Engine stopped: OSError: actor pool could not be created. Rerun with "
        "--verbose for Flower's and Ray's log."
    )


def test_a_local_ray_node_that_misses_its_start_up_wait_is_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    calls: list[str] = []

    def slow_then_up(**kwargs: object) -> None:
        calls.append("init")
        if len(calls) == 1:
            raise Exception("The current node timed out during startup.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", slow_then_up)
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    ray_backend.start_ray({"num_cpus": 1})
    assert calls == ["init", "shutdown", "init"]
    calls.clear()  # a cluster address is never retried: its failure is reported at once
    with pytest.raises(SimulationBackendError, match="timed out during startup"):
        ray_backend.start_ray({"address": "127.0.0.1:6379"})
    assert calls == ["init"]
