"""Real data, side by side: popularity, EASE^R, iALS and fedrec (centralised and federated).

Reads MovieLens 100K and Amazon Beauty from ``../shared/data/`` (relative to
the repository root; never copied into the project). Each dataset is split
leave-last-out by timestamp exactly as the product does (``ItemCatalog`` +
``build_user_item_data``) and every method is evaluated with full ranking over
the whole catalog, the user's training items excluded (``evaluate_scores``):

* popularity (training counts);
* EASE^R (``simulations.reference``: its validation split, weights, λ grid and
  tie rule), λ chosen on a validation split carved from the training data only
  (each user's last training item), then refitted; scored as sparse X_u · B;
* iALS (the ``implicit`` package, CPU, 2 threads): factors, regularisation and
  confidence scaling alpha chosen on the same validation split, then refitted;
* fedrec centralised (``train_centralised``) with the product's defaults for a
  real log (``common/recipes.py``);
* fedrec federated, non-private, through the Simulation Engine: 5 merchants IID
  and 10 merchants Dirichlet non-IID (alpha 0.5), the same defaults. Per-user
  metrics are recomputed from the run directory (global model + each
  merchant's saved user vectors: what the merchant evaluated in the last round),
  so every row is scored on the same test users.

Ratios are NDCG@10 over EASE^R's on the same users, with a paired standard
error by the delta method: SE(a/b) = sd(a_i - r b_i) / (sqrt(n) mean(b)).

    pip install -e '.[bench]'          # iALS; without it that row is skipped
    python benchmarks/real_data.py [--datasets ml-100k,beauty] [--quick]
    python benchmarks/real_data.py --split validation   # tuning and ablations: no test item read

Writes ``benchmarks/results/real_data.json`` and ``real_data.md`` (datasets
not run keep their previous entries).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.config import RunConfig, parse_run_config
from common.constants import hr_at, ndcg_at
from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData, build_user_item_data
from common.data.loaders import load_events
from common.data.partition import PartitionConfig
from common.data.schema import Interactions
from common.evaluation import EvaluationResult, evaluate_model, evaluate_scores
from common.recipes import run_settings
from common.seeding import numpy_rng
from simulations.reference import LAMBDA_GRID
from simulations.runner import DataSource

K = 10
SEED = 0
ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT.parent / "shared" / "data"
HR, NDCG = hr_at(K), ndcg_at(K)
BASELINE = "EASE^R"


@dataclass(frozen=True)
class Dataset:
    name: str
    file: str  # under the data root
    fmt: str
    cite: str


DATASETS = {
    "ml-100k": Dataset(
        "ml-100k", "ml-100k/u.data", "movielens-100k", "MovieLens 100K (Harper & Konstan 2015)"
    ),
    "beauty": Dataset(
        "beauty",
        "amazon-beauty/events.csv",
        "csv",
        "Amazon Beauty 5-core (He & McAuley 2016; McAuley et al. 2015), timestamp = position",
    ),
}
IALS_GRID: dict[str, tuple[float, ...]] = {
    "factors": (64, 128),
    "regularization": (0.01, 0.1, 1.0),
    "alpha": (1.0, 10.0, 40.0),
}
IALS_ITERATIONS = 15
QUICK_IALS_GRID: dict[str, tuple[float, ...]] = {
    "factors": (64,),
    "regularization": (0.1,),
    "alpha": (10.0,),
}
QUICK_EASE_GRID = (100.0, 1000.0)
QUICK_ROUNDS = 2
# Leave-one-out ablation of the real-log recipe (common/recipes.py): each undoes one choice
# on the 5-merchant IID federation, run beside the full recipe (``--ablate``).
ABLATIONS: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},  # no FedAvgM server step
    "fresh-adam": {"keep-optimizer-state": False},  # Adam restarted every round
    "constant-lr": {"learning-rate-schedule": "constant"},
    "dim-64": {"embedding-dim": 64},
    "mf": {"model": "mf"},  # the whole recipe undone: MF with the product's plain defaults
}
FEDERATIONS = (
    ("fedrec federated, 5 merchants IID", PartitionConfig(scheme="iid", num_parties=5)),
    (
        "fedrec federated, 10 merchants Dirichlet α=0.5",
        PartitionConfig(scheme="dirichlet", num_parties=10, alpha=0.5),
    ),
)


@dataclass
class Row:
    """One method on one dataset: per-user metrics aligned with the pooled test users."""

    method: str
    hr: npt.NDArray[np.float64] | None  # (test users,)
    ndcg: npt.NDArray[np.float64] | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    validation: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @classmethod
    def of(cls, method: str, result: EvaluationResult, seconds: float, **extra: Any) -> Row:
        return cls(method, result.per_user[HR], result.per_user[NDCG], seconds, **extra)


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    out = work()
    return out, time.perf_counter() - started


# --- methods ---------------------------------------------------------------------------------


def popularity_row(pooled: UserItemData) -> Row:
    from simulations.baselines import evaluate_popularity

    result, seconds = _timed(lambda: evaluate_popularity(pooled, k=K, seed=SEED))
    return Row.of("popularity", result, seconds)


def _evaluate_ease(data: UserItemData, lam: float, *, stream: str) -> EvaluationResult:
    from simulations.reference import ease_weights, score_ease

    return score_ease(data, ease_weights(data, lam), k=K, rng=numpy_rng(SEED, "evaluate", stream))


def ease_row(pooled: UserItemData, grid: tuple[float, ...]) -> Row:
    """λ of ``grid`` with the best validation NDCG@10 (ties: first), refitted on all training data.

    The same split, weights, scoring, tie rule and random streams as
    ``reference.choose_ease_lambda`` + ``evaluate_ease`` (what ``fedrec simulate``
    prints), with the grid and per-λ progress of this benchmark.
    """
    from simulations.reference import validation_split

    started = time.perf_counter()
    split = validation_split(pooled)
    table = {}
    for lam in grid:
        table[lam] = _evaluate_ease(split, lam, stream="ease-validation").means[NDCG]
        print(f"  EASE^R validation λ={lam:g}: {table[lam]:.4f}", flush=True)
    best = max(grid, key=lambda lam: -math.inf if math.isnan(table[lam]) else table[lam])
    result = _evaluate_ease(pooled, best, stream="ease")
    return Row.of(
        BASELINE,
        result,
        time.perf_counter() - started,
        params={"lambda": best},
        validation=[{"lambda": lam, NDCG: value} for lam, value in table.items()],
    )


def _binary_csr(data: UserItemData) -> Any:
    from scipy.sparse import csr_matrix

    x = csr_matrix(
        (np.ones(data.num_train, dtype=np.float32), data.train_items, data.train_indptr),
        shape=(data.num_users, data.num_items),
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def _fit_ials(data: UserItemData, params: dict[str, Any]) -> EvaluationResult:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS threads would fight them
        model = AlternatingLeastSquares(
            factors=params["factors"],
            regularization=params["regularization"],
            alpha=params["alpha"],
            iterations=IALS_ITERATIONS,
            num_threads=2,
            random_state=SEED,
        )
        model.fit(_binary_csr(data), show_progress=False)
    users_f = np.asarray(model.user_factors)  # (users, factors)
    items_f = np.asarray(model.item_factors)  # (items, factors)
    return evaluate_scores(
        lambda users: users_f[users] @ items_f.T,
        data,
        k=K,
        rng=numpy_rng(SEED, "evaluate", "ials"),
    )


def ials_row(pooled: UserItemData, grid: dict[str, tuple[float, ...]]) -> Row:
    try:
        import implicit
    except ImportError:
        reason = (
            "the 'implicit' package is not installed: pip install -e '.[bench]' "
            "(or pip install implicit==0.7.2)"
        )
        print(f"  iALS skipped: {reason}", flush=True)
        return Row("iALS (implicit)", None, None, 0.0, note=f"skipped: {reason}")
    from simulations.reference import validation_split

    started = time.perf_counter()
    split = validation_split(pooled)
    validation = []
    for factors in grid["factors"]:
        for reg in grid["regularization"]:
            for alpha in grid["alpha"]:
                params = {"factors": int(factors), "regularization": reg, "alpha": alpha}
                result, seconds = _timed(functools.partial(_fit_ials, split, params))
                validation.append({**params, NDCG: result.means[NDCG], "seconds": seconds})
                print(f"  iALS validation {params}: {result.means[NDCG]:.4f}", flush=True)
    best = max(validation, key=lambda v: v[NDCG])
    chosen = {name: best[name] for name in ("factors", "regularization", "alpha")}
    result = _fit_ials(pooled, chosen)
    return Row.of(
        "iALS (implicit)",
        result,
        time.perf_counter() - started,
        params={**chosen, "iterations": IALS_ITERATIONS, "implicit": implicit.__version__},
        validation=validation,
    )


def centralised_row(pooled: UserItemData, run: RunConfig, *, recipe: str = "") -> Row:
    from simulations.baselines import train_centralised

    # as many steps as the 5-merchant IID federation takes together (with local-steps)
    result, seconds = _timed(lambda: train_centralised(pooled, run, parties=5))
    return Row.of(_named("fedrec centralised", recipe), result, seconds, params=_settings(run))


def _named(method: str, recipe: str) -> str:
    """``method``, or ``method [recipe]`` for rows run with ``--set`` settings."""
    return f"{method} [{recipe}]" if recipe else method


def _settings(run: RunConfig) -> dict[str, Any]:
    settings = {
        "model": run.model.kind,
        "embedding_dim": run.model.embedding_dim,
        "rounds": run.federation.num_rounds,
        **(
            {"local_steps": run.privacy.local_steps}
            if run.privacy.local_steps
            else {"local_epochs": run.train.local_epochs}
        ),
        "batch_users": run.train.batch_users,
        "loss": "next-item softmax" if run.model.kind == "history" else run.train.loss,
        "learning_rate": run.train.learning_rate,
        "learning_rate_schedule": run.train.learning_rate_schedule,
        "keep_optimizer_state": run.train.keep_optimizer_state,
        "weight_decay": run.train.weight_decay,
        "strategy": run.federation.strategy,
    }
    if run.federation.strategy == "fedavgm":
        settings |= {
            "fedavgm_learning_rate": run.federation.fedavgm_learning_rate,
            "fedavgm_momentum": run.federation.fedavgm_momentum,
        }
    if run.model.kind == "history":
        settings |= {
            "positions_per_user": run.train.positions_per_user,
            "history_window": run.model.history_window,
            "history_decay": run.model.history_decay,
        }
    return settings


def federated_row(
    label: str,
    partition: PartitionConfig,
    source: DataSource,
    events: Interactions,
    pooled: UserItemData,
    run: RunConfig,
    scratch: Path,
) -> Row:
    """``run`` through the Simulation Engine on ``events`` (loaded from ``source``)."""
    from simulations.runner import SimulationSpec, simulate

    spec = SimulationSpec(
        run=run,
        source=source,
        partition=partition,
        run_dir=scratch
        / "-".join(
            (Path(source.name()).stem, partition.scheme, str(partition.num_parties), label[-12:])
        ).replace(" ", "_"),
        overwrite=True,
        baselines=False,
    )
    results, seconds = _timed(lambda: simulate(spec, events=events))
    hr, ndcg, means = _federated_per_user(spec.run_dir, pooled)
    reported = results["federated"]["overall"]
    note = (
        f"per-user metrics recomputed from the run directory; mean NDCG@10 {means[NDCG]:.5f} "
        f"vs {reported[NDCG]:.5f} in metrics.json"
    )
    params = _settings(run) | {"partition": dataclasses.asdict(partition)}
    return Row(label, hr, ndcg, seconds, params=params, note=note)


def _federated_per_user(
    run_dir: Path, pooled: UserItemData
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], dict[str, float]]:
    """Each merchant's users scored by the global model and its saved user vectors."""
    import torch

    from client.serving.model_dir import load_global_model
    from client.state import MerchantStore
    from common.constants import MERCHANTS_DIR
    from common.models.base import build_model

    global_model = load_global_model(run_dir)
    position = {key: i for i, key in enumerate(np.asarray(pooled.user_keys)[pooled.test_users])}
    hr = np.full(len(pooled.test_users), np.nan)
    ndcg = np.full(len(pooled.test_users), np.nan)
    for directory in sorted(p for p in (run_dir / MERCHANTS_DIR).iterdir() if p.is_dir()):
        store = MerchantStore(directory)
        data = store.load_data()
        local = store.load_local()
        if local is None or len(data.test_users) == 0:
            continue
        model = build_model(
            global_model.run.model,
            num_users=data.num_users,
            num_items=data.num_items,
            generator=torch.Generator().manual_seed(SEED),
        )
        model.bind(data)
        model.load_shared(global_model.shared)
        model.load_local(local)
        result = evaluate_model(
            model, data, k=K, rng=numpy_rng(SEED, "evaluate", store.name), prior=global_model.prior
        )
        rows = [position[data.user_keys[u]] for u in result.users]
        hr[rows] = result.per_user[HR]
        ndcg[rows] = result.per_user[NDCG]
    missing = int(np.isnan(ndcg).sum())
    if missing:
        raise RuntimeError(f"{missing} test users were not evaluated by any merchant")
    return hr, ndcg, {HR: float(hr.mean()), NDCG: float(ndcg.mean())}


# --- statistics and reports ------------------------------------------------------------------


def _mean_se(values: npt.NDArray[np.float64]) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def _ratio_se(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[float, float]:
    """mean(a) / mean(b) and its paired delta-method standard error over the same users."""
    ratio = float(a.mean() / b.mean())
    se = float((a - ratio * b).std(ddof=1) / (math.sqrt(len(a)) * b.mean()))
    return ratio, se


def summarise(rows: list[Row]) -> list[dict[str, Any]]:
    base = next((r for r in rows if r.method == BASELINE and r.ndcg is not None), None)
    out = []
    for row in rows:
        entry: dict[str, Any] = {"method": row.method, "seconds": row.seconds}
        if row.hr is not None and row.ndcg is not None:
            entry[HR], entry[f"{HR}_se"] = _mean_se(row.hr)
            entry[NDCG], entry[f"{NDCG}_se"] = _mean_se(row.ndcg)
            entry["users"] = len(row.ndcg)
            if base is not None and base.ndcg is not None:
                ratio, se = _ratio_se(row.ndcg, base.ndcg)
                entry[f"{NDCG}_over_ease"], entry[f"{NDCG}_over_ease_paired_se"] = ratio, se
        entry |= {"params": row.params, "validation": row.validation, "note": row.note}
        out.append(entry)
    return out


def training_events(pooled: UserItemData, catalog: ItemCatalog) -> Interactions:
    """The training pairs as an event log (timestamp = position in the user's history).

    Split leave-last-out again, this gives the validation split: each user's last
    training item is the target, and no test item is ever read.
    """
    counts = np.diff(pooled.train_indptr)
    users = np.repeat(np.asarray(pooled.user_keys, dtype=object), counts)
    starts = np.repeat(pooled.train_indptr[:-1], counts)
    keys = np.asarray(catalog.keys, dtype=object)
    return Interactions(
        user_id=users,
        item_id=keys[pooled.train_items],
        timestamp=(np.arange(pooled.num_train) - starts).astype(np.int64),
        value=pooled.train_values.astype(np.float32),
    )


def run_dataset(dataset: Dataset, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    path = args.data_root / dataset.file
    print(f"{dataset.name}: loading {path}", flush=True)
    events = load_events(path, fmt=dataset.fmt)
    catalog = ItemCatalog.from_keys(events.item_id)
    pooled = build_user_item_data(events, catalog)
    if args.split == "validation":  # tuning: the test items are dropped before anything runs
        events = training_events(pooled, catalog)
        catalog = ItemCatalog.from_keys(events.item_id)
        pooled = build_user_item_data(events, catalog)
        dataset = dataclasses.replace(
            dataset,
            name=f"{dataset.name} (validation)",
            cite=f"{dataset.cite}; validation split: each user's last training item is the "
            "target, the test items are dropped",
        )
    print(
        f"{dataset.name}: {pooled.num_users} users, {pooled.num_items} items, "
        f"{pooled.num_train} training pairs, {len(pooled.test_users)} test users",
        flush=True,
    )
    # The product's defaults for a real log (common.recipes), under any --set settings.
    settings = run_settings(args.settings, {}, real_log=True)
    source = DataSource(path=str(path), fmt=dataset.fmt)
    run = dataclasses.replace(parse_run_config(settings), num_items=len(catalog))
    fed_run = run
    rounds = QUICK_ROUNDS if args.quick else args.rounds
    if rounds:
        fed_run = dataclasses.replace(
            run, federation=dataclasses.replace(run.federation, num_rounds=rounds)
        )
        if args.quick:
            run = fed_run
    steps: list[tuple[str, Callable[[], Row]]] = [
        ("popularity", lambda: popularity_row(pooled)),
        ("ease", lambda: ease_row(pooled, QUICK_EASE_GRID if args.quick else args.ease_grid)),
        ("ials", lambda: ials_row(pooled, QUICK_IALS_GRID if args.quick else IALS_GRID)),
        ("centralised", lambda: centralised_row(pooled, run, recipe=args.recipe)),
    ]
    for label, partition in FEDERATIONS:
        federate = functools.partial(
            federated_row,
            _named(label, args.recipe),
            partition,
            source,
            events,
            pooled,
            fed_run,
            scratch,
        )
        steps.append((partition.scheme, federate))
    iid = FEDERATIONS[0]
    for name in args.ablate:
        ablated = parse_run_config(
            run_settings({**args.settings, **ABLATIONS[name]}, {}, real_log=True)
        )
        ablated = dataclasses.replace(
            ablated,
            num_items=len(catalog),
            federation=dataclasses.replace(
                ablated.federation, num_rounds=fed_run.federation.num_rounds
            ),
        )
        federate = functools.partial(
            federated_row,
            _named(iid[0], f"ablation: {name}"),
            iid[1],
            source,
            events,
            pooled,
            ablated,
            scratch,
        )
        steps.append((f"ablate-{name}", federate))
    rows = []
    for name, step in steps:
        if args.methods and name not in args.methods:
            continue
        row = step()
        shown = "skipped" if row.ndcg is None else f"NDCG@10 {row.ndcg.mean():.4f}"
        print(f"{dataset.name}: {row.method}: {shown} in {row.seconds:.1f} s", flush=True)
        rows.append(row)
    return {
        "dataset": dataset.name,
        "source": dataset.cite,
        "file": dataset.file,
        "format": dataset.fmt,
        "users": pooled.num_users,
        "items": pooled.num_items,
        "train_pairs": pooled.num_train,
        "test_users": len(pooled.test_users),
        "quick": bool(args.quick),
        "federated_rounds": fed_run.federation.num_rounds,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "methods": summarise(rows),
    }


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "torch", "flwr", "opacus", "implicit"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count()}


def _fmt(entry: dict[str, Any], key: str, digits: int = 4) -> str:
    if key not in entry:
        return "–"
    return f"{entry[key]:.{digits}f} ± {entry[f'{key}_se']:.{digits}f}"


def _validation_lines(methods: list[dict[str, Any]]) -> str:
    """Validation NDCG@10 (training data only) behind each tuned choice."""
    out = []
    for m in methods:
        table = m["validation"]
        if m["method"] == BASELINE and table:
            cells = ", ".join(f"λ={v['lambda']:g}: {v[NDCG]:.4f}" for v in table)
            out.append(f"- {BASELINE} validation NDCG@10: {cells}.\n")
        elif table:
            best = max(table, key=lambda v: v[NDCG])
            worst = min(table, key=lambda v: v[NDCG])
            out.append(
                f"- {m['method']} validation NDCG@10 over {len(table)} settings: best "
                f"{best[NDCG]:.4f} (chosen), worst {worst[NDCG]:.4f}.\n"
            )
    return "\n" + "".join(out) if out else ""


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Real data: fedrec beside popularity, EASE^R and iALS\n\n",
        f"Leave-last-out by timestamp, full ranking over the catalog, training items excluded; "
        f"mean ± standard error over test users. Ratio: NDCG@10 over {BASELINE}'s on the same "
        "users, ± paired delta-method standard error. EASE^R's λ and iALS's factors, "
        "regularisation and alpha are chosen on a validation split of the training data only "
        "(each user's last training item), then refitted on all training data. fedrec rows: "
        "non-private, the product's defaults for a real log (common/recipes.py, chosen on "
        "the validation split) unless a row names another recipe; federated rows run "
        "through Flower's Simulation Engine and are scored per user from the run directory "
        "(global model + each merchant's user vectors), so all rows share the same test users. "
        "Seconds: wall time including tuning, on a machine shared with other work, so rough "
        "(the same ML-100K centralised row took 91 s and 9 s in two runs with identical "
        "metrics). Generated by `benchmarks/real_data.py`.\n",
    ]
    for data in report["datasets"].values():
        lines.append(
            f"\n## {data['dataset']}: {data['users']} users, {data['items']} items, "
            f"{data['test_users']} test users\n\n{data['source']}. Run {data['date']}"
            f"{' (quick mode)' if data['quick'] else ''}; federated rows "
            f"{data['federated_rounds']} rounds.\n\n"
        )
        lines.append(
            "| method | HR@10 | NDCG@10 | NDCG@10 ÷ EASE^R | settings | seconds |\n"
            "|---|---|---|---|---|---|\n"
        )
        for m in data["methods"]:
            ratio = (
                f"{m[f'{NDCG}_over_ease']:.3f} ± {m[f'{NDCG}_over_ease_paired_se']:.3f}"
                if f"{NDCG}_over_ease" in m
                else "–"
            )
            settings = ", ".join(
                f"{k}={v}" for k, v in m["params"].items() if k not in ("partition", "implicit")
            )
            if m["note"].startswith("skipped"):
                settings = m["note"]
            lines.append(
                f"| {m['method']} | {_fmt(m, HR)} | {_fmt(m, NDCG)} | {ratio} | {settings} "
                f"| {m['seconds']:.0f} |\n"
            )
        lines.append(_validation_lines(data["methods"]))
    machine = report["machine"]
    lines.append(
        f"\nMachine: {machine['cpu']}, {machine['cpus']} CPUs; versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + ".\n"
    )
    return "".join(lines)


def _check_data(root: Path, names: list[str]) -> None:
    """Exit non-zero naming the unknown dataset, the missing folder or the missing files."""
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        sys.exit(f"unknown dataset(s) {', '.join(unknown)} (expected {', '.join(DATASETS)})")
    if not root.is_dir():
        sys.exit(f"data folder {root} is missing (expected the shared real datasets there)")
    missing = [root / DATASETS[n].file for n in names]
    missing = [path for path in missing if not path.is_file()]
    if missing:
        sys.exit(f"missing data file(s): {', '.join(map(str, missing))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--datasets", default="ml-100k,beauty", help="comma-separated: ml-100k,beauty"
    )
    parser.add_argument("--quick", action="store_true", help="tiny grids and 2 rounds: a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=0, help="federated rounds (0: the product default)"
    )
    parser.add_argument(
        "--methods",
        default="",
        help="only these steps: popularity,ease,ials,centralised,iid,dirichlet (default all)",
    )
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT, help=f"default: {DATA_ROOT}")
    parser.add_argument(
        "--ease-grid",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=LAMBDA_GRID,
        help="EASE^R λ values to validate (default: simulations.reference.LAMBDA_GRID)",
    )
    parser.add_argument(
        "--render", action="store_true", help="rewrite real_data.md from real_data.json only"
    )
    parser.add_argument(
        "--set",
        dest="pairs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run setting for the fedrec rows (repeatable); their rows are named by --recipe",
    )
    parser.add_argument("--recipe", default="", help="name of the --set settings, shown per row")
    parser.add_argument(
        "--ablate",
        default="",
        help=f"leave-one-out rows of the recipe on 5 IID merchants: {','.join(ABLATIONS)} or all",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="validation: drop the test items and hold out each user's last training item "
        "(for tuning and ablations; reported as its own section)",
    )
    args = parser.parse_args()
    out_json = args.out_dir / "real_data.json"
    if args.render:
        if not out_json.is_file():
            sys.exit(f"no real_data.json in {args.out_dir} to render; run the benchmark first")
        (args.out_dir / "real_data.md").write_text(markdown(json.loads(out_json.read_text())))
        return
    args.methods = {m for m in args.methods.split(",") if m}
    args.ablate = (
        list(ABLATIONS) if args.ablate == "all" else [a for a in args.ablate.split(",") if a]
    )
    unknown = [a for a in args.ablate if a not in ABLATIONS]
    if unknown:
        parser.error(f"unknown ablation(s) {', '.join(unknown)} (expected {', '.join(ABLATIONS)})")
    args.methods |= {f"ablate-{a}" for a in args.ablate} if args.methods else set()
    if args.pairs and not args.recipe:
        parser.error("--set needs --recipe NAME: rows with other settings must say so")
    args.settings = dict(pair.split("=", 1) for pair in args.pairs)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    _check_data(args.data_root, names)
    report: dict[str, Any] = {"benchmark": "real_data", "k": K, "seed": SEED, "datasets": {}}
    if out_json.is_file():
        report["datasets"] = json.loads(out_json.read_text())["datasets"]
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            fresh = run_dataset(DATASETS[name], args, Path(scratch))
            name = fresh["dataset"]
            earlier = report["datasets"].get(name, {}).get("methods", [])
            redone = {m["method"] for m in fresh["methods"]}
            # Rows not rerun this time stay (a recipe's rows sit beside the defaults').
            fresh["methods"] = [m for m in earlier if m["method"] not in redone] + fresh["methods"]
            report["datasets"][name] = fresh
            report |= {
                "ratio_se": "paired delta method over the same test users",
                "versions": _versions(),
                "machine": _machine(),
            }
            args.out_dir.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(report, indent=2))
            (args.out_dir / "real_data.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
