"""``fedrec coordinator init|start|admit|revoke|status`` and ``fedrec run``: flags to calls."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.errors import ExitCode
from common.models.registry import model_kinds
from server.ops.coordinator import DEFAULT_PORT, CoordinatorDir


def _say(text: str) -> None:
    print(f"fedrec: {text}", flush=True)


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
        default=DEFAULT_PORT,
        help=f"public port: Fleet API only, through nginx (default {DEFAULT_PORT})",
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
    init.set_defaults(handler=_init)

    start = cmds.add_parser("start", help="run the coordinator (SuperLink) in the foreground")
    start.add_argument("dir", type=Path, metavar="DIR")
    start.add_argument(
        "--resume", action="store_true", help="resubmit every unfinished run once serving"
    )
    start.set_defaults(handler=_start)

    admit = cmds.add_parser("admit", help="admit a merchant's node key")
    admit.add_argument("dir", type=Path, metavar="DIR")
    admit.add_argument("name", metavar="NAME")
    admit.add_argument("key", type=Path, metavar="KEY.pub")
    admit.add_argument("--valid-days", type=int, default=0, help="admission lifetime (0: none)")
    admit.set_defaults(handler=_admit)

    revoke = cmds.add_parser("revoke", help="revoke a merchant's admission")
    revoke.add_argument("dir", type=Path, metavar="DIR")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(handler=_revoke)

    status = cmds.add_parser("status", help="admitted merchants and runs")
    status.add_argument("dir", type=Path, metavar="DIR")
    status.set_defaults(handler=_status)


def _init(args: argparse.Namespace) -> int:
    from server.ops.operations import init_coordinator

    directory = init_coordinator(
        args.dir,
        sans=args.san,
        host=args.host,
        port=args.port,
        internal_port=args.internal_port,
        valid_days=args.valid_days,
        catalog=args.catalog,
        force_tls=args.force_tls,
    )
    from common.privacy.signing import key_fingerprint
    from server.ops.operator_key import operator_public_key_path, operator_signer

    operator = operator_signer(directory)
    _say(
        f"coordinator directory {args.dir}: certificate for {', '.join(args.san)} valid "
        f"{args.valid_days} days. Give merchants {directory.tls.ca_cert} and "
        f"{operator_public_key_path(directory)} (operator key "
        f"{key_fingerprint(operator.public_key)}: tell them this fingerprint over a channel "
        "you trust); admit their keys with "
        f"`fedrec coordinator admit {args.dir} NAME KEY.pub`; start with "
        f"`fedrec coordinator start {args.dir}`."
    )
    return ExitCode.OK


def _start(args: argparse.Namespace) -> int:
    from common.privacy.signing import key_fingerprint
    from server.ops.operator_key import operator_public_key_path, operator_signer
    from server.ops.superlink import run_coordinator

    directory = CoordinatorDir(args.dir)
    directory.settings()  # not a coordinator directory: say so before writing anything
    operator = operator_signer(directory)  # signs every run `fedrec run` submits
    _say(
        f"operator key {key_fingerprint(operator.public_key)} "
        f"({operator_public_key_path(directory)}): merchants pin it and run only what it signs"
    )
    on_ready = None
    if args.resume:

        def on_ready(cli: object) -> None:
            from server.ops.submit import Submission, submit, unfinished_runs

            for name in unfinished_runs(directory):
                submit(directory, Submission(name=name, settings={}, resume=True), say=_say)

    return run_coordinator(directory, say=_say, on_ready=on_ready)


def _admit(args: argparse.Namespace) -> int:
    from server.ops.operations import admit
    from server.ops.superlink import apply_now

    directory = CoordinatorDir(args.dir)
    admission = admit(directory, name=args.name, public_key=args.key, valid_days=args.valid_days)
    _say(f"admitted {admission.name} (key {admission.fingerprint})")
    apply_now(directory, say=_say)
    return ExitCode.OK


def _revoke(args: argparse.Namespace) -> int:
    from server.ops.operations import revoke
    from server.ops.superlink import apply_now

    directory = CoordinatorDir(args.dir)
    admission = revoke(directory, name=args.name)
    _say(f"revoked {admission.name} (key {admission.fingerprint})")
    apply_now(directory, say=_say)
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    from server.ops.operations import describe
    from server.ops.superlink import coordinator_running
    from server.rounds.progress import PROGRESS_FILE, read_progress

    directory = CoordinatorDir(args.dir)
    settings = directory.settings()
    running = "running" if coordinator_running(directory) else "stopped"
    _say(f"coordinator {settings.host}:{settings.port} ({running}); merchants:")
    describe(directory, _say)
    for run in sorted(p for p in directory.runs.glob("*") if p.is_dir()):
        progress = read_progress(run / PROGRESS_FILE) or {}
        _say(
            f"  run {run.name}: {progress.get('rounds', 0)}/{progress.get('total', '?')} rounds, "
            f"{progress.get('status', 'not started')}"
        )
    return ExitCode.OK


def add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="submit a federated job to a running coordinator and follow it")
    p.add_argument("dir", type=Path, metavar="DIR", help="the coordinator directory")
    p.add_argument("--name", help="run name (default run-TIMESTAMP); results in DIR/runs/NAME")
    p.add_argument("--resume", metavar="NAME", help="continue an interrupted run")
    p.add_argument("--rounds", type=int, help="server rounds (default 20)")
    p.add_argument("--model", choices=model_kinds(), help="recommender (default mf)")
    p.add_argument("--epsilon", type=float, help="user-level DP to this epsilon per merchant")
    p.add_argument("--delta", type=float, help="target delta (default 1e-6)")
    p.add_argument("--secagg", action="store_true", help="aggregate with Flower's SecAgg+")
    p.add_argument("--min-nodes", type=int, help="merchants to wait for before round 1 (2)")
    p.add_argument("--round-timeout", type=float, help="seconds a round waits for merchants (600)")
    p.add_argument("--catalog", type=Path, help="federation catalog (default DIR/catalog.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any setting")
    p.add_argument("--detach", action="store_true", help="submit and return without following")
    p.set_defaults(handler=_run)


def run_command_settings(args: argparse.Namespace) -> dict[str, object]:
    """``fedrec run``'s settings: the flags over the --set pairs, over the tuned defaults.

    The same layering as ``fedrec simulate`` (:func:`common.recipes.run_settings`):
    ``--epsilon`` puts DP-SGD's tuned defaults beneath them, and a ``--set
    privacy-unit`` is kept (``user`` when none is given); ``--model history`` brings
    its recipe (:data:`common.recipes.REAL_LOG_DEFAULTS`) with privacy off.
    """
    from common.recipes import parse_set_pairs, run_settings

    raw: dict[str, object] = dict(parse_set_pairs(args.set))
    flags = {
        "num-server-rounds": args.rounds,
        "model": args.model,
        "target-delta": args.delta,
        "min-nodes": args.min_nodes,
        "round-timeout": args.round_timeout,
        "secagg": True if args.secagg else None,
    }
    raw.update({k: v for k, v in flags.items() if v is not None})
    privacy: dict[str, object] = {}
    if args.epsilon is not None:
        privacy = {"target-epsilon": args.epsilon, "privacy-unit": raw.get("privacy-unit", "user")}
    return run_settings(raw, privacy)


def _run(args: argparse.Namespace) -> int:
    import datetime as dt

    from server.ops.submit import Submission, follow, show_privacy, submit
    from server.ops.superlink import control

    directory = CoordinatorDir(args.dir)
    settings = run_command_settings(args)
    if args.resume:
        submission = Submission(name=args.resume, settings=settings, resume=True)
    else:
        name = args.name or f"run-{dt.datetime.now():%Y%m%d-%H%M%S}"
        submission = Submission(name=name, settings=settings, catalog=args.catalog)
    run_id, run_dir = submit(directory, submission, say=_say)
    if args.detach:
        return ExitCode.OK
    progress = follow(control(directory), run_id, run_dir, say=_say)
    show_privacy(run_dir)
    stopped = progress.get("stopped_early")
    _say(
        f"run {run_dir.name} finished"
        + (f" early ({stopped})" if stopped else "")
        + f": global model, history and ledger in {run_dir}; verify the ledger with "
        f"`fedrec audit verify {run_dir}`."
    )
    return ExitCode.OK
