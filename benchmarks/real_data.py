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
  and 10 merchants Dirichlet non-IID (alpha 0.5), the same defaults;
* with ``--epsilons``: user-level DP federated rows beside DP popularity at the
  same ε on the same merchants (``real_data_private.py``; plot
  ``real_data_private.png``). Per-user
  metrics are recomputed from the run directory (global model + each
  merchant's saved user vectors: what the merchant evaluated in the last round),
  so every row is scored on the same test users.

Ratios are NDCG@10 over EASE^R's on the same users, with a paired standard
error by the delta method: SE(a/b) = sd(a_i - r b_i) / (sqrt(n) mean(b)).

    pip install -e '.[bench]'          # iALS; without it that row is skipped
    python benchmarks/real_data.py [--datasets ml-100k,beauty] [--quick]
    python benchmarks/real_data.py --split validation   # tuning and ablations: no test item read
    python benchmarks/real_data.py --datasets beauty --methods private --epsilons 1,3,8 \
        --set model=sasrec ... --private-set max-grad-norm=... --recipe NAME   # DP rows

Writes ``benchmarks/results/real_data.json`` and ``real_data.md`` (datasets
not run keep their previous entries). The rows are built in ``real_data_rows.py``
and the report is rendered in ``real_data_report.py``; this script runs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data_private import plot, private_rows  # noqa: E402  (sibling modules)
from real_data_report import machine_info, markdown, versions  # noqa: E402
from real_data_rows import (  # noqa: E402
    SEED,
    K,
    Row,
    centralised_row,
    ease_row,
    federated_row,
    ials_row,
    named,
    popularity_row,
    summarise,
    training_events,
)

from common.config import parse_run_config  # noqa: E402
from common.data.catalog import ItemCatalog  # noqa: E402
from common.data.dataset import build_user_item_data  # noqa: E402
from common.data.loaders import load_events  # noqa: E402
from common.data.partition import PartitionConfig  # noqa: E402
from common.models.registry import MODELS  # noqa: E402
from common.recipes import run_settings  # noqa: E402
from simulations.reference import LAMBDA_GRID  # noqa: E402
from simulations.runner import DataSource  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT.parent / "shared" / "data"


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
    steps: list[tuple[str, Callable[[], Row | list[Row]]]] = [
        ("popularity", lambda: popularity_row(pooled)),
        ("ease", lambda: ease_row(pooled, QUICK_EASE_GRID if args.quick else args.ease_grid)),
        ("ials", lambda: ials_row(pooled, QUICK_IALS_GRID if args.quick else IALS_GRID)),
        ("centralised", lambda: centralised_row(pooled, run, recipe=args.recipe)),
    ]
    for label, partition in FEDERATIONS:
        federate = functools.partial(
            federated_row,
            named(label, args.recipe),
            partition,
            source,
            events,
            pooled,
            fed_run,
            scratch,
        )
        steps.append((partition.scheme, federate))
    for epsilon in args.epsilons:
        private_run = parse_run_config(
            run_settings(
                {**args.settings, **args.private_settings},
                {
                    "privacy-unit": "user",
                    "target-epsilon": epsilon,
                    "target-delta": args.delta,
                    "accountant": "rdp",
                },
            )
        )
        private_run = dataclasses.replace(private_run, num_items=len(catalog))
        if rounds and not MODELS[private_run.model.kind].statistics:  # EASE: one release
            private_run = dataclasses.replace(
                private_run,
                federation=dataclasses.replace(private_run.federation, num_rounds=rounds),
            )
        for merchants in args.private_merchants:
            steps.append(
                (
                    "private",
                    functools.partial(
                        private_rows,
                        private_run,
                        epsilon=epsilon,
                        merchants=merchants,
                        recipe=args.recipe,
                        source=source,
                        events=events,
                        pooled=pooled,
                        scratch=scratch,
                        draws=args.draws,
                    ),
                )
            )
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
            named(iid[0], f"ablation: {name}"),
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
        made = step()
        for row in made if isinstance(made, list) else [made]:
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
        help="only these steps: popularity,ease,ials,centralised,iid,dirichlet,private "
        "(default all)",
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
        "--epsilons",
        default="",
        help="user-level DP rows at these ε (e.g. 1,3,8): the federated model beside DP "
        "popularity on the same merchants (method 'private')",
    )
    parser.add_argument("--delta", type=float, default=1e-6, help="δ of the DP rows")
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="noise draws per DP cell (fresh merchant state and DP-popularity noise each); "
        "rows are per-user means over draws, and standard errors count users and draws",
    )
    parser.add_argument(
        "--private-merchants",
        type=lambda text: [int(v) for v in text.split(",") if v.strip()],
        default=[3],
        help="IID merchants of the DP rows; several comma-separated (e.g. 1,3)",
    )
    parser.add_argument(
        "--private-set",
        dest="private_pairs",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run setting for the DP rows only, over --set (repeatable)",
    )
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
        rendered = json.loads(out_json.read_text())
        (args.out_dir / "real_data.md").write_text(markdown(rendered))
        plot(rendered, args.out_dir / "real_data_private.png")
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
    args.private_settings = dict(pair.split("=", 1) for pair in args.private_pairs)
    args.epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
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
                "versions": versions(),
                "machine": machine_info(),
            }
            args.out_dir.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(report, indent=2))
            (args.out_dir / "real_data.md").write_text(markdown(report))
            plot(report, args.out_dir / "real_data_private.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
