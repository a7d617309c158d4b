"""``fedrec coordinator init|start|admit|revoke|status`` and ``fedrec run``: the flags.

Import-light; the functions behind them are :mod:`server.ops.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.constants import COORDINATOR_PORT
from common.errors import ConfigError
from common.flag_checks import run_flag_problems
from common.models.registry import model_kinds

COMMANDS = "server.ops.commands"


def add_coordinator(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("coordinator", help="run a federation: TLS, admitted merchants, runs")
    cmds = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = cmds.add_parser("init", help="create a coordinator directory (CA, certificate, config)")
    init.add_argument("dir", type=Path, metavar="DIR")
    init.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="HOST",
        help="a name or IP merchants dial (repeatable; the certificate is valid for these only)",
    )
    init.add_argument(
        "--host", default="0.0.0.0", help="public address merchants dial (default 0.0.0.0)"
    )
    init.add_argument(
        "--port",
        type=int,
        default=COORDINATOR_PORT,
        help=f"public port: Fleet API only, through nginx (default {COORDINATOR_PORT})",
    )
    init.add_argument(
        "--internal-port",
        type=int,
        metavar="PORT",
        help="the SuperLink's port on 127.0.0.1, every API, loopback only (default: --port + 1)",
    )
    init.add_argument("--valid-days", type=int, default=365, help="certificate lifetime (365)")
    init.add_argument("--catalog", type=Path, help="federation catalog (item keys, one per line)")
    init.add_argument("--force-tls", action="store_true", help="renew the TLS material")
    init.set_defaults(handler=f"{COMMANDS}:init_command")

    start = cmds.add_parser("start", help="run the coordinator (SuperLink) in the foreground")
    start.add_argument("dir", type=Path, metavar="DIR")
    start.add_argument(
        "--resume", action="store_true", help="resubmit every unfinished run once serving"
    )
    start.set_defaults(handler=f"{COMMANDS}:start_command", check=_check_dir)

    admit = cmds.add_parser("admit", help="admit a merchant's node key")
    admit.add_argument("dir", type=Path, metavar="DIR")
    admit.add_argument("name", metavar="NAME")
    admit.add_argument("key", type=Path, metavar="KEY.pub")
    admit.add_argument("--valid-days", type=int, default=0, help="admission lifetime (0: none)")
    admit.set_defaults(handler=f"{COMMANDS}:admit_command", check=_check_dir)

    revoke = cmds.add_parser("revoke", help="revoke a merchant's admission")
    revoke.add_argument("dir", type=Path, metavar="DIR")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(handler=f"{COMMANDS}:revoke_command", check=_check_dir)

    status = cmds.add_parser("status", help="admitted merchants and runs")
    status.add_argument("dir", type=Path, metavar="DIR")
    status.set_defaults(handler=f"{COMMANDS}:status_command", check=_check_dir)


def add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="submit a federated job to a running coordinator and follow it")
    p.add_argument("dir", type=Path, metavar="DIR", help="the coordinator directory")
    p.add_argument("--name", help="run name (default run-TIMESTAMP); results in DIR/runs/NAME")
    p.add_argument("--resume", metavar="NAME", help="continue an interrupted run")
    p.add_argument(
        "--from-run",
        metavar="NAME",
        help="warm start: begin from the global model of the finished run DIR/runs/NAME",
    )
    p.add_argument(
        "--rounds", type=int, help="server rounds (default 20; 1 with --epsilon and no --model)"
    )
    p.add_argument(
        "--model",
        choices=model_kinds(),
        help="recommender (default mf; with --epsilon, ease from one DP release of statistics; "
        "choose mf, history, sasrec or neumf to train with DP-SGD over rounds)",
    )
    p.add_argument("--epsilon", type=float, help="user-level DP to this epsilon per merchant")
    p.add_argument("--delta", type=float, help="target delta (default 1e-6)")
    p.add_argument("--secagg", action="store_true", help="aggregate with Flower's SecAgg+")
    p.add_argument("--min-nodes", type=int, help="merchants to wait for before round 1 (2)")
    p.add_argument("--round-timeout", type=float, help="seconds a round waits for merchants (600)")
    p.add_argument("--catalog", type=Path, help="federation catalog (default DIR/catalog.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting")
    p.add_argument("--detach", action="store_true", help="submit and return without following")
    p.set_defaults(handler=f"{COMMANDS}:run_command", check=_check_run)


def _check_dir(args: argparse.Namespace) -> None:
    """DIR must be a directory: a mistyped path is named as such, not as a stopped coordinator."""
    if not args.dir.is_dir():
        what = "is a file, not a directory" if args.dir.exists() else "does not exist"
        raise ConfigError(
            f"Coordinator directory {args.dir} {what}; pass the directory that "
            "`fedrec coordinator init DIR --san HOST` created."
        )


def _check_run(args: argparse.Namespace) -> None:
    """``fedrec run``'s own limits, then DIR: refused before anything is imported or sent."""
    problems = run_flag_problems(epsilon=args.epsilon, delta=args.delta, rounds=args.rounds)
    if problems:
        raise ConfigError("; ".join(problems) + ".")
    _check_dir(args)
