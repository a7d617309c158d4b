"""``fedrec coordinator init|start|admit|revoke|status`` and ``fedrec run``: flags to calls.

The flags are :mod:`server.ops.cli`; each function here takes them parsed and
checked, and returns an exit code. Admissions need no torch; the commands that
read or submit runs (their checkpoints hold tensors) import :mod:`server.ops.submit`
and :mod:`server.rounds.progress` themselves.
"""

from __future__ import annotations

import argparse
import datetime as dt

from common.errors import ExitCode
from common.privacy.signing import key_fingerprint
from common.recipes import parse_set_pairs, run_settings
from server.ops.coordinator import CoordinatorDir
from server.ops.operations import admit, describe, init_coordinator, revoke
from server.ops.operator_key import operator_public_key_path, operator_signer
from server.ops.superlink import apply_now, control, coordinator_running, run_coordinator


def _say(text: str) -> None:
    print(f"fedrec: {text}", flush=True)


def init_command(args: argparse.Namespace) -> int:
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


def start_command(args: argparse.Namespace) -> int:
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


def admit_command(args: argparse.Namespace) -> int:
    directory = CoordinatorDir(args.dir)
    admission = admit(directory, name=args.name, public_key=args.key, valid_days=args.valid_days)
    _say(f"admitted {admission.name} (key {admission.fingerprint})")
    apply_now(directory, say=_say)
    return ExitCode.OK


def revoke_command(args: argparse.Namespace) -> int:
    directory = CoordinatorDir(args.dir)
    admission = revoke(directory, name=args.name)
    _say(f"revoked {admission.name} (key {admission.fingerprint})")
    apply_now(directory, say=_say)
    return ExitCode.OK


def status_command(args: argparse.Namespace) -> int:
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


def run_command_settings(args: argparse.Namespace) -> dict[str, object]:
    """``fedrec run``'s settings: the flags over the --set pairs, over the tuned defaults.

    The same layering as ``fedrec simulate`` (:func:`common.recipes.run_settings`):
    ``--epsilon`` puts DP-SGD's tuned defaults beneath them, and a ``--set
    privacy-unit`` is kept (``user`` when none is given); ``--model history`` brings
    its recipe (:data:`common.recipes.REAL_LOG_DEFAULTS`) with privacy off.
    """
    raw: dict[str, object] = dict(parse_set_pairs(args.set))
    flags = {
        "num-server-rounds": args.rounds,
        "model": args.model,
        "target-delta": args.delta,
        "min-nodes": args.min_nodes,
        "round-timeout": args.round_timeout,
        "secagg": True if args.secagg else None,
        "init-from": str((CoordinatorDir(args.dir).runs / args.from_run).resolve())
        if args.from_run
        else None,
    }
    raw.update({k: v for k, v in flags.items() if v is not None})
    privacy: dict[str, object] = {}
    if args.epsilon is not None:
        privacy = {"target-epsilon": args.epsilon, "privacy-unit": raw.get("privacy-unit", "user")}
    return run_settings(raw, privacy)


def run_command(args: argparse.Namespace) -> int:
    from server.ops.submit import Submission, follow, show_privacy, submit

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
