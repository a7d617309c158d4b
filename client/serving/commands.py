"""``fedrec serve``: a running Recommender service (the flags: :mod:`client.serving.cli`)."""

from __future__ import annotations

import argparse
import math
import signal
import threading

import grpc

from client.serving.index import ServingOptions
from client.serving.model_dir import MODELS_DIR
from client.serving.service import ModelHolder, start_server
from common.errors import ExitCode


def _say(text: str) -> None:
    print(f"fedrec: {text}", flush=True)


def serve_command(args: argparse.Namespace) -> int:
    credentials = None
    if args.tls_cert is not None:
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
        if index.choice is not None:
            _say(f"this merchant {index.source_note}")
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
