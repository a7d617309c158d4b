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
The merchants' directories and the refusals before training are
:mod:`simulations.merchants`; Ray and the Simulation Engine are
:mod:`simulations.ray_backend`.
"""

from __future__ import annotations

import json
import logging
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
    GLOBAL_MODEL_FILE,
    MERCHANTS_DIR,
    RUN_CONFIG_FILE,
    RUN_METRICS_FILE,
    ndcg_at,
)
from common.data.catalog import ItemCatalog
from common.data.dataset import concat_user_item_data
from common.data.formats import DEFAULT_FORMAT
from common.data.partition import PartitionConfig
from common.data.schema import Interactions
from common.evaluation import EvaluationResult
from common.flower_env import set_flower_environment
from simulations.merchants import (
    check_evaluable,
    check_merchants_evaluable,
    check_privacy_feasible,
    prepare_merchants,
)
from simulations.party_keys import ephemeral_party_keys
from simulations.ray_backend import run_flower
from simulations.report import privacy_results
from simulations.run_dir import check_destination, staged_run_dir
from simulations.synthetic import SyntheticSpec, generate_federation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSource:
    """Either a file (``path`` + ``fmt``) or a synthetic federation (``synthetic``)."""

    path: str = ""
    fmt: str = DEFAULT_FORMAT
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


def _served(run_dir: Path, run: RunConfig, catalog: ItemCatalog) -> dict[str, Any]:
    import torch

    from client.serving.model_dir import GlobalModel
    from simulations.recommend import load_item_prior
    from simulations.served import served_by_merchant, served_comparison

    global_model = GlobalModel(
        directory=run_dir,
        version="",
        run=run,
        shared=torch.load(run_dir / GLOBAL_MODEL_FILE, weights_only=True),
        catalog=catalog,
        prior=load_item_prior(run_dir),
    )
    served = served_by_merchant(
        run_dir, k=run.federation.top_k, seed=run.federation.seed, global_model=global_model
    )
    return served_comparison(served)


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
    on_start: Callable[[], None] | None = None,
    events: Interactions | None = None,
    client_mods: Sequence[Any] = (),
) -> dict[str, Any]:
    """Run one simulated federation; returns the metrics written to ``metrics.json``.

    ``events`` may be passed when the caller already loaded ``spec.source``.
    ``on_start`` is called once every refusal is behind (data, run directory,
    privacy feasibility), just before Flower starts: where a progress bar belongs.
    """
    set_flower_environment()
    check_destination(spec.run_dir, overwrite=spec.overwrite)
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
        if on_start is not None:
            on_start()
        run_flower(
            run,
            num_merchants=len(names),
            on_round=on_round,
            mods=client_mods,
            verbose=spec.verbose,
            num_cpus=spec.num_cpus,
            ray_address=spec.ray_address,
        )
        federated_done = time.perf_counter()
        history = json.loads((staging / FEDERATION_FILE).read_text(encoding="utf-8"))
        results: dict[str, Any] = {"federated": asdict(_federated_comparison(history))}
        if run.privacy.chooses_source:  # what each merchant chose to serve, on its test items
            results["served"] = _served(staging, run, catalog)
        if spec.baselines:
            from common.models.registry import MODELS
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
            labelled = [("popularity", popularity)]
            if not MODELS[run.model.kind].statistics:  # EASE^R is a statistics model's own
                centralised = train_centralised(pooled, non_private_run(run), parties=len(names))
                labelled.insert(0, (CENTRALISED, centralised))
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
        results["privacy"] = privacy_results(history, privacy=run.privacy, model=run.model.kind)
        config = {
            "run": to_run_config(spec.run),
            "partition": asdict(spec.partition),
            "data": spec.source.describe(),
            "versions": versions(),
        }
        (staging / RUN_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (staging / RUN_METRICS_FILE).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results
