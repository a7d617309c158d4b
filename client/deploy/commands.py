"""``fedrec merchant keygen|join``: flags to typed calls (the flags: :mod:`client.deploy.cli`)."""

from __future__ import annotations

import argparse

from client.deploy.enrolment import read_info
from client.deploy.node_key import generate_node_key
from client.deploy.supernode import JoinSpec, join
from common.errors import ExitCode
from common.node_keys import fingerprint, load_public_key


def _say(text: str) -> None:
    print(f"fedrec: {text}", flush=True)


def keygen_command(args: argparse.Namespace) -> int:
    public = generate_node_key(args.dir, overwrite=args.overwrite)
    _say(
        f"node key written to {args.dir} (fingerprint {fingerprint(load_public_key(public))}). "
        f"Send {public} to the coordinator operator; keep node.key private."
    )
    return ExitCode.OK


def join_command(args: argparse.Namespace) -> int:
    info = read_info(args.state) if args.state.is_dir() else None
    name = args.name or (str(info["name"]) if info else args.state.resolve().name)
    spec = JoinSpec(
        coordinator=args.coordinator,
        ca=args.ca,
        operator_key=args.operator_key,
        key_dir=args.key,
        data=args.data,
        state=args.state,
        name=name,
        fmt=args.format,
        poll=args.poll,
        warm=not args.no_warm_start,
        verbose=args.verbose,
    )
    return join(spec, say=_say)
