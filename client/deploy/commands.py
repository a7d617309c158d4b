"""``fedrec merchant keygen|join|ingest|status``: flags to typed calls (flags: ``cli.py``)."""

from __future__ import annotations

import argparse

from client.deploy.enrolment import read_info
from client.deploy.ingest import ingest, log_summary
from client.deploy.node_key import generate_node_key
from client.deploy.supernode import JoinSpec, join
from common.constants import MERCHANT_LEDGER_FILE, MERCHANT_POLICY_FILE, MERCHANT_PRIVACY_FILE
from common.errors import ConfigError, ExitCode
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


def ingest_command(args: argparse.Namespace) -> int:
    done = ingest(args.state, data=args.data, fmt=args.format)
    unknown = (
        "no federation catalog received yet"
        if done.unknown_items is None
        else f"{done.unknown_items} name items outside the federation catalog (skipped in runs)"
    )
    _say(
        f"{args.data}: {done.read} events read, {done.added} added ({done.new_users} new users), "
        f"{done.duplicates} already stored or repeated; {unknown}."
    )
    _say(
        f"log now: {done.events} events, {done.users} users, {done.items} items"
        + ("" if done.added else " (unchanged)")
    )
    return ExitCode.OK


def status_command(args: argparse.Namespace) -> int:
    from client.state.policy import load_policy
    from common.privacy.accountant import PrivacyAccount

    state = args.state
    if not state.is_dir():
        raise ConfigError(f"--state {state} is not a directory; pass a merchant's state.")
    info = read_info(state) or {}
    log = log_summary(state)
    _say(f"merchant {info.get('name', state.name)} ({state})")
    _say(
        f"log: {log['events']} events, {log['users']} users, {log['items']} items, "
        f"{log['first_event']} to {log['last_event']}; "
        f"{len(info.get('ingests') or [])} ingests since enrolment"  # type: ignore[arg-type]
    )
    account = PrivacyAccount.load(state / MERCHANT_PRIVACY_FILE)
    if account is None:
        _say("privacy account: nothing released yet")
    else:
        plan = account.plan
        releases = "; ".join(
            f"{s.kind} in round {s.round} (sigma {s.event.noise_multiplier:.4g}, "
            + (
                "no sampling"
                if s.event.sample_rate >= 1
                else f"Poisson sampling q={s.event.sample_rate:.4g}"
            )
            + f", {s.event.steps} steps)"
            for s in account.events
        )
        _say(
            f"privacy account: epsilon {account.epsilon():.4f} spent of {plan.target_epsilon:g} "
            f"planned, at delta {plan.delta:g}, unit: one {plan.unit} of this merchant, "
            f"accountant {plan.accountant.upper()} (Opacus); releases: {releases or 'none'}"
        )
        if account.past:
            runs = ", ".join(repr(p.run) for p in account.past)
            _say(
                f"lifetime: epsilon {account.lifetime_epsilon():.4f} over {len(account.past) + 1} "
                f"runs (earlier: {runs}; this run: {account.run!r}), every release composed at "
                f"delta {plan.delta:g}, {plan.accountant.upper()}, for the whole population"
            )
    policy = load_policy(state / MERCHANT_POLICY_FILE)
    _say(f"policy: {policy.describe()}")
    ledger = state / MERCHANT_LEDGER_FILE
    _say(f"ledger: {ledger}" if ledger.is_file() else "ledger: none yet")
    return ExitCode.OK
