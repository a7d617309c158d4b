"""``fedrec merchant keygen|join|ingest|status``: the flags.

Import-light; the functions behind them are :mod:`client.deploy.commands`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.data.formats import DEFAULT_FORMAT, format_help

COMMANDS = "client.deploy.commands"


def add_merchant(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("merchant", help="join a federation as a merchant")
    cmds = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    keygen = cmds.add_parser("keygen", help="make this merchant's node key pair")
    keygen.add_argument("dir", type=Path, metavar="DIR")
    keygen.add_argument("--overwrite", action="store_true", help="replace an existing key")
    keygen.set_defaults(handler=f"{COMMANDS}:keygen_command")

    join = cmds.add_parser("join", help="enrol an event log and serve the federation")
    join.add_argument("--coordinator", required=True, metavar="HOST:PORT")
    join.add_argument("--ca", required=True, type=Path, help="the federation's ca.pem")
    join.add_argument(
        "--operator-key",
        type=Path,
        metavar="FILE",
        help="the operator's operator.pub, pinned at first join (runs it did not sign are refused)",
    )
    join.add_argument("--key", required=True, type=Path, metavar="DIR", help="node key directory")
    join.add_argument("--data", required=True, type=Path, metavar="FILE", help="event log")
    join.add_argument("--format", default=DEFAULT_FORMAT, help=format_help())
    join.add_argument("--state", required=True, type=Path, metavar="DIR", help="durable state")
    join.add_argument("--name", help="merchant name (default: the state directory's name)")
    join.add_argument("--poll", type=float, default=0.5, help="idle poll seconds (0.5)")
    join.add_argument(
        "--no-warm-start",
        action="store_true",
        help="start each ClientApp process cold (Flower's default; seconds slower per message)",
    )
    join.add_argument(
        "--verbose",
        action="store_true",
        help="show Flower's own lines too (always in STATE/logs/supernode.log)",
    )
    join.set_defaults(handler=f"{COMMANDS}:join_command")

    ingest = cmds.add_parser(
        "ingest", help="append new events to an enrolled merchant's log (validated, atomic)"
    )
    ingest.add_argument("--state", required=True, type=Path, metavar="DIR", help="durable state")
    ingest.add_argument("--data", required=True, type=Path, metavar="FILE", help="new events")
    ingest.add_argument("--format", default=DEFAULT_FORMAT, help=format_help())
    ingest.set_defaults(handler=f"{COMMANDS}:ingest_command")

    status = cmds.add_parser("status", help="the stored log and the privacy account")
    status.add_argument("--state", required=True, type=Path, metavar="DIR", help="durable state")
    status.set_defaults(handler=f"{COMMANDS}:status_command")
