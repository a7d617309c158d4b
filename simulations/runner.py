"""Simulate a federation on one machine with Flower's Simulation Engine.

``simulate`` loads (or generates) events, splits them into merchants, writes
each merchant's state directory, runs the same ServerApp and ClientApp that a
deployment runs, then evaluates the baselines (popularity, the same model
trained on pooled data, and EASE^R, the strong reference) on the same split
and writes one run directory:

    RUN/config.json        resolved settings, data source, versions
    RUN/catalog.json       the federation item catalog
    RUN/global_model.pt    shared parameters only
    RUN/federation.json    per-round, per-merchant history from the coordinator
    RUN/metrics.json       federated vs the baselines, overall and per merchant
    RUN/merchants/NAME/    each merchant's data and local (user) parameters

Every party's ledger signing key lives outside RUN and is deleted when the run
ends (:mod:`simulations.party_keys`): the published directory cannot be re-signed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.config import RunConfig, to_run_config
from common.constants import (
    EVAL_USERS,
    FEDERATION_FILE,
    MERCHANT_DATA_FILE,
    MERCHANT_USERS_FILE,
    MERCHANTS_DIR,
    RUN_CATALOG_FILE,
    RUN_CONFIG_FILE,
    RUN_METRICS_FILE,
    ndcg_at,
)
from common.data.catalog import ItemCatalog
from common.data.dataset import (
    UserItemData,
    build_user_item_data,
    concat_user_item_data,
    count_evaluable_users,
)
from common.data.partition import PartitionConfig, partition_events
from common.data.schema import Interactions
from common.errors import ConfigError, DataError, DataProblem, FedrecError
from common.evaluation import EvaluationResult
from common.flower_env import set_flower_environment
from simulations.party_keys import ephemeral_party_keys
from simulations.run_dir import staged_run_dir
from simulations.synthetic import SyntheticSpec, generate_federation

logger = logging.getLogger(__name__)


class _DropRunSimulationDeprecation(logging.Filter):
    """``run_simulation`` is Flower's in-process entry point; its deprecation notice is known."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "run_simulation` function is deprecated" not in record.getMessage()


RAY_PROBE_SECONDS = 5.0


class SimulationBackendError(FedrecError):
    """Ray, the Simulation Engine's backend, could not start or stopped."""


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


def _start_ray(init_args: dict[str, Any]) -> None:
    """Start (or connect to) Ray the way Flower's RayBackend does, before any thread exists.

    A failure here is reported with its cause at once; inside ``run_simulation``
    it would leave the ServerApp waiting a whole round-timeout first.
    """
    import sys

    import ray

    if ray.is_initialized():
        return
    pythonpath = os.pathsep.join(sys.path)  # as flwr's RayBackend.init_ray
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    try:
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args)
    except Exception as exc:  # Ray raises many kinds (RuntimeError, ConnectionError, ...)
        text = str(exc).strip()
        cause = text.splitlines()[0].rstrip(".") if text else type(exc).__name__
        raise SimulationBackendError(
            f"Ray could not start, so the simulation cannot run: {type(exc).__name__}: {cause}. "
            "Rerun with --verbose for Ray's log; check free memory and /tmp space, or point "
            "ray-address at a running cluster."
        ) from exc


@dataclass(frozen=True)
class DataSource:
    """Either a file (``path`` + ``fmt``) or a synthetic federation (``synthetic``)."""

    path: str = ""
    fmt: str = "csv"
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)

    def describe(self) -> dict[str, Any]:
        if self.path:
            return {"path": str(Path(self.path).resolve()), "format": self.fmt}
        return {"synthetic": asdict(self.synthetic)}

    def name(self) -> str:
        return self.path or "the synthetic federation"

    def load(self) -> Interactions:
        if self.path:
            from common.data.loaders import load_events

            return load_events(self.path, fmt=self.fmt)
        return generate_federation(self.synthetic)


@dataclass(frozen=True)
class SimulationSpec:
    run: RunConfig
    source: DataSource
    partition: PartitionConfig
    run_dir: Path
    overwrite: bool = False
    baselines: bool = True
    num_cpus: int = 0  # 0 = all cores
    ray_address: str = ""  # an existing Ray cluster ("HOST:PORT" or "auto"); "" = start one here
    verbose: bool = False
    # Per-merchant budgets written to each merchant's own policy.json (merchant -> epsilon-max).
    merchant_budgets: dict[str, float] = field(default_factory=dict)
    # Item keys to put in the catalog even if no event names them (e.g. audit canaries).
    extra_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Comparison:
    """Mean metrics and per-merchant metrics of one method."""

    overall: dict[str, float]
    per_merchant: dict[str, dict[str, float]]


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

    from client.state import MerchantStore

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
    """Refuse before anything runs if delta is not below 1/examples at some merchant."""
    if not run.privacy.merchant_dp:
        return
    from client.private_training import private_population

    problems = []
    for name, data in sorted(merchants.items()):
        population = len(private_population(data, run.privacy.unit))
        if population == 0 or run.privacy.delta >= 1.0 / population:
            problems.append(f"{name} has {population} {run.privacy.unit}s")
    if problems:
        raise ConfigError(
            f"target-delta={run.privacy.delta:g} must be below 1/({run.privacy.unit}s at each "
            f"merchant): {'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}. "
            "Lower target-delta (e.g. --set target-delta=1e-7) or use fewer, larger merchants."
        )


def _split_by_merchant(
    result: EvaluationResult, offsets: np.ndarray, names: list[str]
) -> dict[str, dict[str, float]]:
    owner = np.searchsorted(offsets, result.users, side="right") - 1
    out = {}
    for i, name in enumerate(names):
        mask = owner == i
        out[name] = {
            m: float(np.nanmean(v[mask])) if mask.any() else float("nan")
            for m, v in result.per_user.items()
        }
        out[name][EVAL_USERS] = float(mask.sum())
    return out


def _federated_comparison(history: dict[str, Any]) -> Comparison:
    per_merchant = history["rounds"][-1]["evaluate"]
    if not per_merchant:
        raise RuntimeError("the federation returned no evaluation results")
    weights = {name: float(m.get(EVAL_USERS, 0.0)) for name, m in per_merchant.items()}
    total = sum(weights.values())
    # Merchants without test users send no metrics: average over those that have them.
    skipped = (EVAL_USERS, "num-examples", "eval-seconds")
    metric_names = dict.fromkeys(
        k for n, m in per_merchant.items() if weights[n] > 0 for k in m if k not in skipped
    )
    overall: dict[str, float] = {}
    for k in metric_names:
        having = [n for n in per_merchant if weights[n] > 0 and k in per_merchant[n]]
        weight = sum(weights[n] for n in having)
        overall[k] = sum(per_merchant[n][k] * weights[n] for n in having) / weight
    overall[EVAL_USERS] = total
    return Comparison(overall=overall, per_merchant=per_merchant)


def mean_payload_bytes(rounds: list[dict[str, Any]]) -> dict[str, float | None]:
    """Mean payload bytes per participating merchant per round: train/evaluate, down/up."""
    out: dict[str, float | None] = {}
    for phase in ("train", "evaluate"):
        for direction in ("down", "up"):
            key = f"{phase}-{direction}"
            values = [e[key] for r in rounds for e in r.get("bytes", {}).values() if key in e]
            out[key] = float(np.mean(values)) if values else None
    return out


def versions() -> dict[str, str]:
    import flwr
    import torch

    return {"flwr": flwr.__version__, "torch": torch.__version__, "numpy": np.__version__}


def simulate(
    spec: SimulationSpec,
    *,
    on_round: Callable[[Any], None] | None = None,
    events: Interactions | None = None,
    client_mods: Sequence[Any] = (),
) -> dict[str, Any]:
    """Run one simulated federation; returns the metrics written to ``metrics.json``.

    ``events`` may be passed when the caller already loaded ``spec.source``.
    """
    set_flower_environment()
    if events is None:
        events = spec.source.load()  # bad input fails here, before any directory exists
    check_evaluable(events, source=spec.source.name())
    started = time.perf_counter()
    with (
        staged_run_dir(spec.run_dir, overwrite=spec.overwrite) as staging,
        ephemeral_party_keys(spec.run_dir) as keys,
    ):
        catalog, merchants = prepare_merchants(
            events,
            spec.partition,
            staging,
            seed=spec.run.federation.seed,
            budgets=spec.merchant_budgets,
            extra_items=spec.extra_items,
        )
        check_merchants_evaluable(merchants, source=spec.source.name())
        check_privacy_feasible(spec.run, merchants)
        names = sorted(merchants)
        run = replace(
            spec.run,
            merchants_dir=str(staging / MERCHANTS_DIR),
            output_dir=str(staging),
            coordinator_key=spec.run.coordinator_key or str(keys.coordinator),
            merchant_keys_dir=spec.run.merchant_keys_dir or str(keys.merchants),
            num_items=len(catalog),
            federation=replace(spec.run.federation, min_nodes=len(names)),
        )
        prepared = time.perf_counter()
        _run_flower(run, num_merchants=len(names), spec=spec, on_round=on_round, mods=client_mods)
        federated_done = time.perf_counter()
        history = json.loads((staging / FEDERATION_FILE).read_text(encoding="utf-8"))
        results: dict[str, Any] = {"federated": asdict(_federated_comparison(history))}
        if spec.baselines:
            from simulations.baselines import (
                evaluate_popularity,
                non_private_run,
                strong_reference,
                train_centralised,
            )
            from simulations.reference import CENTRALISED, EASE_METHOD, REFERENCE

            pooled, offsets = concat_user_item_data([merchants[n] for n in names])
            popularity = evaluate_popularity(
                pooled, k=run.federation.top_k, seed=run.federation.seed
            )
            centralised = train_centralised(pooled, non_private_run(run), parties=len(names))
            labelled = [(CENTRALISED, centralised), ("popularity", popularity)]
            ease = strong_reference(pooled, k=run.federation.top_k, seed=run.federation.seed)
            if isinstance(ease, str):  # the catalog is too large: the pooled model stands in
                results[REFERENCE] = {"method": CENTRALISED, "skipped": ease}
            else:
                results[REFERENCE] = {
                    "method": EASE_METHOD,
                    "lambda": ease.lam,
                    "validation_metric": ndcg_at(run.federation.top_k),
                    "validation": {f"{lam:g}": v for lam, v in ease.validation.items()},
                    "seconds": ease.seconds,
                }
                labelled.append((REFERENCE, ease.evaluation))
            if run.privacy.merchant_dp:
                from simulations.baselines import evaluate_dp_popularity

                labelled.append(
                    (
                        "dp-popularity",
                        evaluate_dp_popularity(
                            [merchants[n] for n in names], pooled, run=run, names=names
                        ),
                    )
                )
            for label, result in labelled:
                overall = dict(result.means)
                overall[EVAL_USERS] = float(result.num_users)
                comparison = Comparison(
                    overall=overall, per_merchant=_split_by_merchant(result, offsets, names)
                )
                results[label] = {**results.get(label, {}), **asdict(comparison)}
        finished = time.perf_counter()
        results["timing"] = {
            "prepare_seconds": prepared - started,
            "federated_seconds": federated_done - prepared,
            "federated_train_seconds": sum(
                m.get("train-seconds", 0.0) for r in history["rounds"] for m in r["train"].values()
            ),
            "federated_eval_seconds": sum(
                m.get("eval-seconds", 0.0)
                for r in history["rounds"]
                for m in r["evaluate"].values()
            ),
            "baselines_seconds": finished - federated_done,
            "total_seconds": finished - started,
        }
        results["merchants"] = {
            n: {
                "users": merchants[n].num_users,
                "train_interactions": merchants[n].num_train,
                "test_users": len(merchants[n].test_users),
            }
            for n in names
        }
        results["communication"] = {
            **mean_payload_bytes(history["rounds"]),
            "compression": run.compression.describe(),
        }
        results["evaluation_missing"] = sum(
            f.startswith("evaluate:") for f in history["rounds"][-1]["failures"]
        )
        results["top_k"] = run.federation.top_k
        results["privacy"] = {
            "unit": run.privacy.unit,
            "target_epsilon": run.privacy.target_epsilon,
            "delta": run.privacy.delta,
            "accountant": run.privacy.accountant,
            "per_merchant": history.get("privacy", {}),
            "refused": {
                name: {"round": r["round"], "reason": reason}
                for r in history["rounds"]
                for name, reason in r.get("refused", {}).items()
            },
            "stopped_early": history.get("stopped_early", ""),
            "client_level": history.get("client_privacy", {}),
            "device_epsilon": run.privacy.device_epsilon,
            "trained_items": history.get("trained_items"),
        }
        config = {
            "run": to_run_config(spec.run),
            "partition": asdict(spec.partition),
            "data": spec.source.describe(),
            "versions": versions(),
        }
        (staging / RUN_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (staging / RUN_METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def _run_flower(
    run: RunConfig,
    *,
    num_merchants: int,
    spec: SimulationSpec,
    on_round: Callable[[Any], None] | None,
    mods: Sequence[Any],
) -> None:
    from flwr.simulation import run_simulation

    from client.client_app import make_client_app
    from server.server_app import make_server_app

    init_args: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.INFO if spec.verbose else logging.ERROR,
        "log_to_driver": spec.verbose,
    }
    if spec.ray_address:  # the cluster has its own resources; Ray refuses them from a driver
        init_args["address"] = spec.ray_address
    else:
        init_args.update(num_cpus=spec.num_cpus or os.cpu_count() or 1, num_gpus=0)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": init_args,
    }
    check_ray_address(spec.ray_address)
    flower_logger = logging.getLogger("flwr")
    quiet = _DropRunSimulationDeprecation()
    flower_logger.addFilter(quiet)
    try:
        _start_ray({"include_dashboard": False, **init_args})
        try:
            run_simulation(
                server_app=make_server_app(run, on_round=on_round),
                client_app=make_client_app(run, mods=mods),
                num_supernodes=num_merchants,
                backend_config=backend_config,  # type: ignore[arg-type]
                verbose_logging=spec.verbose,
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
        _stop_ray()


_ENGINE_FAILED = "An error was encountered. Ending simulation."  # flwr's run_simulation


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _stop_ray() -> None:
    """Shut Ray down if the run left it up (Flower's backend stops it only once it was built)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
