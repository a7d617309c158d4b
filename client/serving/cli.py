"""``fedrec serve``: flags to a running Recommender service."""

from __future__ import annotations

import argparse
import math
import signal
import threading
from pathlib import Path

from common.errors import ExitCode


def _say(text: str) -> None:
    print(f"fedrec: {text}", flush=True)


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
    from client.serving.defaults import DEFAULT_LAMBDA, FINE_TUNE_EPOCHS, MAX_K

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
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from client.serving.index import ServingOptions
    from client.serving.model_dir import MODELS_DIR
    from client.serving.service import ModelHolder, start_server
    from common.errors import ConfigError

    if not args.state.is_dir():
        raise ConfigError(
            f"--state {args.state} is not a directory; pass the merchant's state directory "
            "(the one given to `fedrec merchant join --state`)."
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; pass both or neither.")
    if args.max_k < 1:
        raise ConfigError(f"--max-k must be >= 1, got {args.max_k}.")
    credentials = None
    if args.tls_cert is not None:
        import grpc

        credentials = grpc.ssl_server_credentials(
            [(args.tls_key.read_bytes(), args.tls_cert.read_bytes())]
        )
    elif args.host not in ("127.0.0.1", "localhost", "::1"):
        _say(
            f"warning: listening on {args.host} without TLS; pass --tls-cert/--tls-key or keep "
            "the port inside the merchant's own network"
        )
    model = args.model if args.model is not None else args.state / MODELS_DIR
    options = ServingOptions(
        personalisation=args.personalisation,
        fine_tune_epochs=args.fine_tune_epochs,
        max_k=args.max_k,
    )
    holder = ModelHolder(model, args.state, options)
    running = start_server(
        holder,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload_interval=args.reload_interval,
        credentials=credentials,
        on_reload=lambda index: _say(f"reloaded: now serving model {index.version}"),
    )
    index = holder.current()
    if index is None:
        _say(
            f"listening on {args.host}:{running.port}; waiting for a model at {model}"
            + (f" ({holder.last_error})" if holder.last_error else "")
        )
    else:
        lam = (
            "off (global model)"
            if math.isinf(args.personalisation)
            else f"lambda={args.personalisation:g}"
        )
        _say(
            f"serving model {index.version} ({index.kind}, {len(index.keys)} items, "
            f"{index.data.num_users} users, personalisation {lam}) on {args.host}:{running.port}"
        )
        _say(
            "personalised: recommendations use shared parameters fine-tuned on your own data; "
            "they never leave this process, and are not covered by the federation's DP "
            "guarantee towards your other users (--personalisation inf serves the global model)"
            if index.personalised
            else "global model: recommendations come from the federation's released parameters "
            "and each user's own vector (jointly DP when the run was private)"
        )
        if index.data.unknown_items:
            _say(
                f"{index.data.unknown_items} of your events name items outside the federation "
                "catalog; those items are never recommended (ask the operator to add them)"
            )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    _say("stopping: finishing requests in flight")
    running.stop()
    return ExitCode.OK
