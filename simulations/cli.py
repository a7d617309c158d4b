"""The ``fedrec`` command.

    fedrec simulate  [--data FILE --format FMT] [--merchants N] [--rounds R] ...
    fedrec recommend RUN_DIR --k 10 --out recs.csv
    fedrec personalisation RUN_DIR
    fedrec audit verify|report|empirical|epsilon ...       (simulations/audit_cli.py)
    fedrec experiment run|sweep|report ...                 (simulations/experiment_cli.py)
    fedrec coordinator init|start|admit|revoke|status, fedrec run   (server/ops/cli.py)
    fedrec merchant keygen|join                                      (client/deploy/cli.py)
    fedrec serve --state DIR                                         (client/serving/cli.py)

Flags are parsed here, at the edge, into the frozen configs of ``common``;
errors of kind :class:`common.errors.FedrecError` print one paragraph and exit
non-zero, without a stack trace.

The ``cli`` modules hold flags and their checks and import only light modules
(``fedrec --help`` loads no torch, Flower or Ray; tests/simulations/test_cli_startup.py).
Each command names the function that does its work as ``"module:function"``
(``handler``, in the ``commands`` module beside its parser), imported once the
arguments are parsed and their ``check``, if any, has passed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from client.deploy.cli import add_merchant
from client.serving.cli import add_serve
from common.choices import LOSSES, PARTITION_SCHEMES, STRATEGIES
from common.data.formats import DEFAULT_FORMAT, format_help
from common.errors import ConfigError, ExitCode, FedrecError
from common.flag_checks import run_flag_problems
from common.flower_env import set_flower_environment
from common.models.registry import model_kinds
from common.privacy.config import ACCOUNTANTS, UNITS
from server.ops.cli import add_coordinator, add_run
from simulations.audit_cli import add_audit
from simulations.experiment_cli import add_experiment
from simulations.run_dir import check_destination

logger = logging.getLogger("fedrec")
COMMANDS = "simulations.commands"  # the functions behind simulate, recommend, personalisation


def _add_simulate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
        choices=("auto", *PARTITION_SCHEMES),
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
        "--rounds",
        type=int,
        help="server rounds (default 20; 12 on a real log, privacy off; 1 under user-level DP "
        "with no --model)",
    )
    fl.add_argument(
        "--model",
        choices=model_kinds(),
        help="recommender (default mf; under user-level DP, ease, learnt from one DP release of "
        "item counts and co-occurrence; on a real log with privacy off, history; history comes "
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
        help="DP to this total epsilon per merchant (user-level unless --privacy-unit says "
        "otherwise): with no --model, one release of DP statistics learns EASE; a chosen model "
        "trains with DP-SGD; default: no DP",
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
    p.set_defaults(handler=f"{COMMANDS}:simulate_command", check=_check_simulate)


def _check_simulate(args: argparse.Namespace) -> None:
    """The flags' own limits and the run directory: refused before anything heavy is imported."""
    problems = run_flag_problems(epsilon=args.epsilon, delta=args.delta, rounds=args.rounds)
    if args.merchants < 1:
        problems.append(f"--merchants must be >= 1, got {args.merchants}")
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    if args.out is not None:
        check_destination(args.out, overwrite=args.overwrite)


def _add_recommend(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("recommend", help="write top-K recommendations for every user of a run")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--k", type=int, default=10, help="items per user (default 10)")
    p.add_argument("--out", type=Path, default=Path("recs.csv"), help="CSV (default recs.csv)")
    p.set_defaults(handler=f"{COMMANDS}:recommend_command")


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
    p.set_defaults(handler=f"{COMMANDS}:personalisation_command")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedrec",
        description="Federated, privacy-preserving recommender built on Flower.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_simulate(sub)
    _add_recommend(sub)
    _add_personalisation(sub)
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


def command_paths(parser: argparse.ArgumentParser) -> Iterator[tuple[str, ...]]:
    """Every command and sub-command of ``parser``, e.g. ``("coordinator", "init")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (name,)
                yield from ((name, *rest) for rest in command_paths(child))


def _command(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function named by the parsed command's ``handler``, imported now."""
    module, _, name = str(args.handler).partition(":")
    function: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if (check := getattr(args, "check", None)) is not None:
            check(args)  # flags and paths, before any heavy import or any work
        set_flower_environment()
        _configure_logging(getattr(args, "verbose", False))
        return _command(args)(args)
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
