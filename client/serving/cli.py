"""``fedrec serve``: the flags of a running Recommender service.

Import-light; the function behind them is :mod:`client.serving.commands`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from client.serving.defaults import DEFAULT_LAMBDA, FINE_TUNE_EPOCHS, MAX_K
from common.errors import ConfigError

COMMANDS = "client.serving.commands"


def _lambda(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a number >= 0 or 'inf' (the global model), got {text!r}"
        ) from exc
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'inf', got {text!r}")
    return value


def add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="serve recommendations to this merchant's users over gRPC",
        description=(
            "Serve Recommend/Similar (client/serving/recommender.proto) from a merchant's state "
            "and a global model; reloads the model when a new one is published."
        ),
    )
    p.add_argument(
        "--state",
        required=True,
        type=Path,
        metavar="DIR",
        help="the merchant's state directory (fedrec merchant join --state)",
    )
    p.add_argument(
        "--model",
        type=Path,
        metavar="GLOBAL",
        help="a run directory, or a versions directory (default: STATE/models, "
        "where `merchant join` publishes each evaluated global model)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=9300, help="port (9300; 0 picks a free one)")
    p.add_argument(
        "--personalisation",
        type=_lambda,
        default=DEFAULT_LAMBDA,
        metavar="LAMBDA",
        help=f"proximal weight of local fine-tuning; 'inf' serves the global model "
        f"unchanged ({DEFAULT_LAMBDA})",
    )
    p.add_argument("--fine-tune-epochs", type=int, default=FINE_TUNE_EPOCHS)
    p.add_argument("--max-k", type=int, default=MAX_K, help=f"largest k accepted ({MAX_K})")
    p.add_argument("--workers", type=int, default=8, help="request threads (8)")
    p.add_argument(
        "--reload-interval",
        type=float,
        default=2.0,
        help="seconds between checks for a new global model (2)",
    )
    p.add_argument("--tls-cert", type=Path, help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key (with --tls-cert)")
    p.set_defaults(handler=f"{COMMANDS}:serve_command", check=_check_serve)


def _check_serve(args: argparse.Namespace) -> None:
    """The state directory and the flags' own limits, before the model and torch are loaded."""
    if not args.state.is_dir():
        raise ConfigError(
            f"--state {args.state} is not a directory; pass the merchant's state directory "
            "(the one given to `fedrec merchant join --state`)."
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; pass both or neither.")
    if args.max_k < 1:
        raise ConfigError(f"--max-k must be >= 1, got {args.max_k}.")
