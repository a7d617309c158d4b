"""The ``fedrec`` command.

    fedrec simulate  [--data FILE --format FMT] [--merchants N] [--rounds R] ...
    fedrec recommend RUN_DIR --k 10 --out recs.csv
    fedrec audit verify|epsilon ...   (simulations/audit_cli.py)
    fedrec coordinator init|start|admit|revoke|status, fedrec run   (server/ops/cli.py)
    fedrec merchant keygen|join                                      (client/deploy/cli.py)

Flags are parsed here, at the edge, into the frozen configs of ``common``;
errors of kind :class:`common.errors.FedrecError` print one paragraph and exit
non-zero, without a stack trace.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from common.choices import LOSSES, STRATEGIES
from common.data.formats import DEFAULT_FORMAT, format_help
from common.errors import ConfigError, ExitCode, FedrecError
from common.models.registry import model_kinds
from common.privacy.config import ACCOUNTANTS, UNITS

logger = logging.getLogger("fedrec")


def _add_simulate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from common.data.partition import SCHEMES

    p = sub.add_parser(
        "simulate",
        help="simulate a federation on this machine (default: a synthetic 10-merchant federation)",
        description="Simulate a federation with Flower's Simulation Engine and compare it with "
        "a centralised model and popularity on the same leave-last-out split.",
    )
    data = p.add_argument_group("data")
    data.add_argument("--data", metavar="FILE", help="event log (default: synthetic federation)")
    data.add_argument(
        "--format",
        default=DEFAULT_FORMAT,
        help=format_help(),
    )
    data.add_argument(
        "--partition",
        choices=("auto",) + SCHEMES,
        default="auto",
        help="how users are split into parties; auto = natural if the data has merchant_id, "
        "else iid",
    )
    data.add_argument(
        "--merchants",
        type=int,
        default=10,
        help="parties for iid/dirichlet, or merchants of the synthetic federation (default 10)",
    )
    data.add_argument("--alpha", type=float, default=0.5, help="Dirichlet alpha (default 0.5)")
    data.add_argument("--users", type=int, default=4000, help="synthetic users (default 4000)")
    data.add_argument("--items", type=int, default=1500, help="synthetic items (default 1500)")
    fl = p.add_argument_group("federation")
    fl.add_argument(
        "--rounds", type=int, help="server rounds (default 20; 12 on a real log, privacy off)"
    )
    fl.add_argument(
        "--model",
        choices=model_kinds(),
        help="recommender (default mf; on a real log with privacy off, history; history comes "
        "with the tuned recipe of common/recipes.py)",
    )
    fl.add_argument(
        "--strategy",
        choices=tuple(STRATEGIES),
        help="default fedavg (fedavgm on a real log, privacy off)",
    )
    fl.add_argument("--local-epochs", type=int, help="passes over local users per round (2)")
    fl.add_argument("--loss", choices=tuple(LOSSES), help="bce: implicit (default); mse: ratings")
    fl.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    dp = p.add_argument_group("differential privacy")
    dp.add_argument(
        "--epsilon",
        type=float,
        help="train with DP-SGD to this total epsilon per merchant (user-level unless "
        "--privacy-unit interaction); default: no DP",
    )
    dp.add_argument("--delta", type=float, help="target delta (default 1e-6)")
    dp.add_argument(
        "--privacy-unit",
        choices=tuple(unit for unit in UNITS if unit != "off"),
        help="what DP protects: user (default), interaction (record-level, weaker) or client "
        "(cross-device: one user per client, use with --partition device)",
    )
    dp.add_argument("--accountant", choices=ACCOUNTANTS, help="Opacus accountant (rdp)")
    fl.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any run setting by its pyproject key, e.g. --set embedding-dim=64 (repeatable)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="run directory (default runs/run-TIMESTAMP)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    out.add_argument("--no-baselines", action="store_true", help="skip centralised/popularity")
    out.add_argument("--cpus", type=int, default=0, help="CPUs for the simulation (default all)")
    out.add_argument("--verbose", action="store_true", help="show Flower and Ray logs")
    p.set_defaults(handler=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from common.config import parse_run_config
    from common.data.partition import PartitionConfig
    from common.recipes import MODEL_RECIPES, REAL_LOG_DEFAULTS, parse_set_pairs, run_settings
    from simulations.report import render_results
    from simulations.run_dir import default_run_dir
    from simulations.runner import DataSource, SimulationSpec, simulate
    from simulations.synthetic import SyntheticSpec

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
    console.print(
        f"fedrec simulate: {run.model.kind.upper()} dim {run.model.embedding_dim}, "
        f"{run.federation.strategy}, {run.federation.num_rounds} rounds x "
        + (
            f"{run.privacy.local_steps} local steps"
            if run.privacy.local_steps
            else f"{run.train.local_epochs} local epochs"
        )
        + f", partition {scheme}; data: "
        f"{args.data or 'synthetic federation'}"
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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("federated training", total=run.federation.num_rounds)

        def on_round(record: object) -> None:
            progress.advance(task)

        results = simulate(spec, on_round=on_round, events=events)
    render_results(results, console=console, run_dir=str(run_dir))
    return ExitCode.OK


def _add_recommend(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("recommend", help="write top-K recommendations for every user of a run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--out", type=Path, default=Path("recs.csv"), help="CSV (default recs.csv)")
    p.set_defaults(handler=_recommend)


def _recommend(args: argparse.Namespace) -> int:
    from simulations.recommend import recommend_run

    rows = recommend_run(args.run_dir, k=args.k, out=args.out)
    print(f"wrote {rows} recommendations to {args.out}")
    return ExitCode.OK


def _add_personalisation(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "personalisation",
        help="per-merchant NDCG@K of a run: global model vs local fine-tuning across lambda",
    )
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--lambdas",
        default="1 0.1 0.01 0.001 0.0001 0",
        help="proximal weights to try, space-separated ('inf', the global model, is always in)",
    )
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning passes (default 2)")
    p.add_argument("--json", type=Path, help="also write the table as JSON here")
    p.set_defaults(handler=_personalisation)


def _personalisation(args: argparse.Namespace) -> int:
    import json
    import math

    from simulations.personalisation import personalisation_table

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
        from common.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(table.to_json(), indent=2))
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrec",
        description="Federated, privacy-preserving recommender built on Flower.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_simulate(sub)
    _add_recommend(sub)
    _add_personalisation(sub)
    from client.deploy.cli import add_merchant
    from client.serving.cli import add_serve
    from server.ops.cli import add_coordinator, add_run
    from simulations.audit_cli import add_audit
    from simulations.experiment_cli import add_experiment

    add_audit(sub)
    add_coordinator(sub)
    add_run(sub)
    add_merchant(sub)
    add_serve(sub)
    add_experiment(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    """One readable stream: fedrec warnings by default; Flower's own lines only with --verbose."""
    import flwr.common.logger  # noqa: F401  (its import sets the flwr logger up; adjust after)

    flower = logging.getLogger("flwr")
    flower.setLevel(logging.DEBUG if verbose else logging.WARNING)
    flower.propagate = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from simulations.runner import set_flower_environment

    set_flower_environment()
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    try:
        code: int = args.handler(args)
        return code
    except FedrecError as error:
        print(f"fedrec: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(
            "fedrec: interrupted; nothing was written, except that a run which had started "
            "releasing keeps its privacy ledgers in RUN_DIR.incomplete.",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
