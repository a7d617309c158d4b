"""Does the synthetic federation tell the real logs' story? Methods ranked on both.

The embedded synthetic federation (``simulations.synthetic``) is what tests,
``make demo`` and the synthetic benchmarks run on, so the ranking of methods
on it should look like the ranking on real logs. This benchmark generates the
default federation and, beside it, the same federation with every time and
sequence knob off (a static latent-factor model: what the generator was before
issue 14), and reports on each, side by side:

* popularity and EASE^R (λ chosen on a validation split of the training data);
* fedrec's MF with the product's plain defaults (what ``make demo`` trains),
  centralised and federated over the generator's 10 natural merchants;
* fedrec's real-log recipe (``common/recipes.py``: the history model),
  centralised and federated the same way;

as NDCG@10 with standard errors and a ratio to EASE^R on the same users (paired
delta-method SE), beside the same ratios measured on MovieLens 100K and Amazon
Beauty (read from ``benchmarks/results/real_data.json``, written by
``real_data.py``). Rows reuse ``real_data.py``'s methods (``real_data_rows.py``), so
both benchmarks score alike.

    python benchmarks/synthetic_realism.py [--quick]
    python benchmarks/synthetic_realism.py --render   # after real_data.py: new real ratios

Writes ``benchmarks/results/synthetic_realism.{json,md}`` (about 10 minutes on 2 cores).
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_data_rows import (  # noqa: E402  (a sibling module, not a package)
    NDCG,
    Row,
    centralised_row,
    ease_row,
    federated_row,
    popularity_row,
    summarise,
)

from common.config import RunConfig, parse_run_config  # noqa: E402
from common.data.catalog import ItemCatalog  # noqa: E402
from common.data.dataset import UserItemData, build_user_item_data  # noqa: E402
from common.data.partition import PartitionConfig  # noqa: E402
from common.recipes import run_settings  # noqa: E402
from simulations.reference import LAMBDA_GRID  # noqa: E402
from simulations.runner import DataSource  # noqa: E402
from simulations.synthetic import SyntheticSpec, static_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "default generator": SyntheticSpec(),
    "static latent-factor model (knobs off)": static_model(SyntheticSpec()),
}
# Real-data rows with the same meaning: (label here, method in real_data.json).
REAL_ROWS = {
    "popularity": "popularity",
    "EASE^R": "EASE^R",
    "fedrec MF defaults, federated": "fedrec federated, 5 merchants IID [ablation: mf]",
    "fedrec recipe, centralised": "fedrec centralised",
    "fedrec recipe, federated": "fedrec federated, 5 merchants IID",
}
NATURAL = PartitionConfig(scheme="natural")


def _runs(num_items: int, *, rounds: int) -> dict[str, RunConfig]:
    """The product's defaults: plain (MF) and the real-log recipe, privacy off."""
    out = {}
    for name, real_log in (("fedrec MF defaults", False), ("fedrec recipe", True)):
        run = parse_run_config(run_settings({}, {}, real_log=real_log))
        run = dataclasses.replace(run, num_items=num_items)
        if rounds:
            run = dataclasses.replace(
                run, federation=dataclasses.replace(run.federation, num_rounds=rounds)
            )
        out[name] = run
    return out


def _centralised(method: str, pooled: UserItemData, run: RunConfig) -> Row:
    return dataclasses.replace(centralised_row(pooled, run), method=method)


def run_variant(name: str, spec: SyntheticSpec, args: argparse.Namespace) -> dict[str, Any]:
    source = DataSource(synthetic=spec)
    events = source.load()
    catalog = ItemCatalog.from_keys(events.item_id)
    pooled = build_user_item_data(events, catalog)
    print(f"{name}: {pooled.num_users} users, {pooled.num_items} items", flush=True)
    steps: list[Callable[[], Row]] = [
        lambda: popularity_row(pooled),
        lambda: ease_row(pooled, (30.0, 300.0) if args.quick else LAMBDA_GRID),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for label, run in _runs(len(catalog), rounds=2 if args.quick else 0).items():
            steps.append(functools.partial(_centralised, f"{label}, centralised", pooled, run))
            steps.append(
                functools.partial(
                    federated_row,
                    f"{label}, federated",
                    NATURAL,
                    source,
                    events,
                    pooled,
                    run,
                    Path(scratch),
                )
            )
        rows = []
        for step in steps:
            row = step()
            assert row.ndcg is not None
            print(f"{name}: {row.method}: NDCG@10 {row.ndcg.mean():.4f}", flush=True)
            rows.append(row)
    return {
        "variant": name,
        "spec": dataclasses.asdict(spec),
        "users": pooled.num_users,
        "items": pooled.num_items,
        "train_pairs": pooled.num_train,
        "quick": bool(args.quick),
        "methods": summarise(rows),
    }


def _real_ratios() -> dict[str, dict[str, tuple[float, float]]]:
    """Ratios to EASE^R on the real test splits, per dataset, from real_data.json."""
    path = RESULTS / "real_data.json"
    if not path.is_file():
        return {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for dataset in ("ml-100k", "beauty"):
        methods = json.loads(path.read_text())["datasets"].get(dataset, {}).get("methods", [])
        found = {m["method"]: m for m in methods if f"{NDCG}_over_ease" in m}
        out[dataset] = {
            label: (found[real][f"{NDCG}_over_ease"], found[real][f"{NDCG}_over_ease_paired_se"])
            for label, real in REAL_ROWS.items()
            if real in found
        }
    return out


def _ratio(entry: dict[str, Any] | tuple[float, float] | None) -> str:
    if entry is None:
        return "–"
    if isinstance(entry, tuple):
        return f"{entry[0]:.2f} ± {entry[1]:.2f}"
    return f"{entry[f'{NDCG}_over_ease']:.2f} ± {entry[f'{NDCG}_over_ease_paired_se']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    variants = report["variants"]
    real = report["real_ratios"]
    lines = [
        "# Synthetic federation against real logs: NDCG@10 ÷ EASE^R",
        "",
        "Each method's NDCG@10 over EASE^R's on the same test users (± paired SE); "
        "leave-last-out, full ranking, training items excluded. Synthetic: 10 natural "
        "merchants, seed 0; real: the test splits of `real_data.md` (federated rows "
        "there are 5 IID merchants). Generated by `benchmarks/synthetic_realism.py`"
        f" on {report['date']}.",
        "",
        "| method | " + " | ".join(v["variant"] for v in variants) + " | ML-100K | Beauty |",
        "|---|" + "---|" * (len(variants) + 2),
    ]
    methods = [m["method"] for m in variants[0]["methods"]]
    for method in methods:
        cells = [
            _ratio(next((m for m in v["methods"] if m["method"] == method), None)) for v in variants
        ]
        for dataset in ("ml-100k", "beauty"):
            pair = real.get(dataset, {}).get(method)
            cells.append(_ratio(tuple(pair) if pair else None))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "NDCG@10 (± SE) and wall time:", ""]
    lines += ["| variant | method | NDCG@10 | seconds |", "|---|---|---|---|"]
    for v in variants:
        for m in v["methods"]:
            lines.append(
                f"| {v['variant']} | {m['method']} | {m[NDCG]:.4f} ± {m[f'{NDCG}_se']:.4f} "
                f"| {m['seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds, 2 λ values: a smoke run")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--render",
        action="store_true",
        help="rewrite the .md from the .json, with the real ratios re-read from real_data.json",
    )
    args = parser.parse_args()
    out_json = args.out_dir / "synthetic_realism.json"
    if args.render:
        if not out_json.is_file():
            sys.exit(f"no synthetic_realism.json in {args.out_dir}; run the benchmark first")
        report = json.loads(out_json.read_text()) | {"real_ratios": _real_ratios()}
        out_json.write_text(json.dumps(report, indent=2))
        (args.out_dir / "synthetic_realism.md").write_text(markdown(report))
        return
    report = {
        "benchmark": "synthetic_realism",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "variants": [run_variant(name, spec, args) for name, spec in VARIANTS.items()],
        "real_ratios": _real_ratios(),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (args.out_dir / "synthetic_realism.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
