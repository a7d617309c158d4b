"""``fedrec simulate|recommend|personalisation``: the work behind :mod:`simulations.cli`.

Each function takes the parsed, already checked arguments and returns an exit
code. The parsers stay import-light (``fedrec --help`` loads no torch); this
module, and the torch, Flower and Ray it brings, is imported only when one of
its commands runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from common.config import RunConfig, parse_run_config
from common.data.partition import PartitionConfig
from common.errors import ConfigError, ExitCode
from common.fileio import atomic_write_text
from common.models.registry import MODELS
from common.recipes import MODEL_RECIPES, REAL_LOG_DEFAULTS, parse_set_pairs, run_settings
from simulations.personalisation import personalisation_table
from simulations.recommend import recommend_run
from simulations.report import render_results
from simulations.run_dir import default_run_dir
from simulations.runner import DataSource, SimulationSpec, simulate
from simulations.synthetic import SyntheticSpec


def simulate_command(args: argparse.Namespace) -> int:
    raw: dict[str, object] = dict(parse_set_pairs(args.set))
    flags: dict[str, object] = {
        "num-server-rounds": args.rounds,
        "model": args.model,
        "strategy": args.strategy,
        "local-epochs": args.local_epochs,
        "loss": args.loss,
        "seed": args.seed,
    }
    privacy: dict[str, object] = {"target-delta": args.delta, "accountant": args.accountant}
    if args.epsilon is not None:
        privacy["target-epsilon"] = args.epsilon
        privacy["privacy-unit"] = args.privacy_unit or raw.get("privacy-unit") or "user"
    elif args.privacy_unit:
        privacy["privacy-unit"] = args.privacy_unit
    raw.update({k: v for k, v in flags.items() if v is not None})
    # Tuned defaults beneath: DP-SGD's under DP; the real-log recipe on a real log.
    run = parse_run_config(run_settings(raw, privacy, real_log=bool(args.data)))
    if args.data:
        source = DataSource(path=args.data, fmt=args.format)
    else:
        source = DataSource(
            synthetic=SyntheticSpec(
                num_merchants=args.merchants,
                num_users=args.users,
                num_items=args.items,
                seed=args.seed,
            )
        )
    scheme = args.partition
    events = None
    if scheme == "auto":
        events = source.load()
        scheme = "natural" if events.merchant_id is not None else "iid"
    partition = PartitionConfig(
        scheme=scheme, num_parties=args.merchants, alpha=args.alpha, seed=args.seed
    )
    run_dir = args.out or default_run_dir()
    console = Console(width=None if sys.stdout.isatty() else 120)
    _print_summary(console, run, scheme=scheme, data=args.data)
    spec = SimulationSpec(
        run=run,
        source=source,
        partition=partition,
        run_dir=run_dir,
        overwrite=args.overwrite,
        baselines=not args.no_baselines,
        num_cpus=args.cpus,
        verbose=args.verbose,
    )
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("federated training", total=run.federation.num_rounds)

    def on_round(record: object) -> None:
        progress.advance(task)

    # The bar appears once every refusal (data, run directory, delta) is behind us.
    try:
        results = simulate(spec, on_round=on_round, on_start=progress.start, events=events)
    finally:
        progress.stop()
    render_results(results, console=console, run_dir=str(run_dir))
    return ExitCode.OK


def _print_summary(console: Console, run: RunConfig, *, scheme: str, data: str | None) -> None:
    """The settings in force, the recipe beneath them and the privacy guarantee."""
    if MODELS[run.model.kind].statistics:
        shape = (
            f"{run.model.kind.upper()} over the {run.model.ease_items} most counted items "
            f"(ridge {run.model.ease_ridge:g}), one DP co-occurrence release per merchant"
        )
    else:
        shape = (
            f"{run.model.kind.upper()} dim {run.model.embedding_dim}, "
            f"{run.federation.strategy}, {run.federation.num_rounds} rounds x "
            + (
                f"{run.privacy.local_steps} local steps"
                if run.privacy.local_steps
                else f"{run.train.local_epochs} local epochs"
            )
        )
    console.print(
        f"fedrec simulate: {shape}, partition {scheme}; data: {data or 'synthetic federation'}"
    )
    if run.model.kind in MODEL_RECIPES:
        console.print(
            f"recipe: {run.model.kind} defaults (common/recipes.py) beneath your settings: "
            + (
                f"sampled softmax against {run.model.sasrec_negatives} negatives, "
                if run.model.sasrec_negatives
                else "full softmax, "
            )
            + f"{run.train.learning_rate_schedule} learning rate, {run.federation.strategy}"
        )
    elif not run.privacy.enabled and run.model.kind == REAL_LOG_DEFAULTS["model"]:
        console.print(
            "recipe: real-log defaults (common/recipes.py) beneath your settings: next-item "
            f"softmax, Adam kept across rounds, {run.train.learning_rate_schedule} learning rate, "
            f"{run.federation.strategy}"
        )
    console.print(
        "privacy: "
        + (
            f"{run.privacy.unit}-level DP, epsilon {run.privacy.target_epsilon:g} at delta "
            f"{run.privacy.delta:g} ({run.privacy.accountant.upper()})"
            if run.privacy.enabled
            else "off"
        )
    )


def recommend_command(args: argparse.Namespace) -> int:
    result = recommend_run(args.run_dir, k=args.k, out=args.out)
    for merchant, source in result.sources.items():
        print(f"{merchant}: {source}")
    print(f"wrote {result.rows} recommendations to {args.out}")
    return ExitCode.OK


def personalisation_command(args: argparse.Namespace) -> int:
    try:
        lambdas = tuple(float(x) for x in args.lambdas.split())
    except ValueError as exc:
        raise ConfigError(
            f"--lambdas must be numbers >= 0 separated by spaces, got {args.lambdas!r}."
        ) from exc
    if any(math.isnan(x) or x < 0 for x in lambdas):
        raise ConfigError(f"--lambdas must be >= 0, got {args.lambdas!r}.")
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}.")
    table = personalisation_table(args.run_dir, lambdas, epochs=args.epochs)
    print(table.markdown(), end="")
    best = table.best_lambda()
    print(
        f"\nbest lambda {best:g}: helps {table.helped(best)} of {len(table.rows)} merchants "
        f"(mean NDCG@{table.k} {table.mean_ndcg(math.inf):.4f} -> {table.mean_ndcg(best):.4f}). "
        "Fine-tuned models stay local to each merchant (see README, privacy model)."
    )
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(table.to_json(), indent=2))
    return ExitCode.OK
