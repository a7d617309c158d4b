"""``fedrec coordinator start``: Flower's SuperLink with TLS, node authentication and admissions.

The SuperLink runs as a child process (``flower-superlink``) bound to
``127.0.0.1:internal-port`` only, with the coordinator's certificate,
SuperNode authentication, a database in ``DIR/state`` (admissions and runs
survive a restart) and offline-safe settings. Merchants reach it through
nginx on the public ``host:port``, which serves the Fleet API and nothing
else (:mod:`server.ops.proxy`): the Control API (run submission, node
registration) answers on this machine only. Raw logs go to ``DIR/logs``;
the terminal gets one summary and readable event lines. Once it answers,
pending admissions are registered, revocations applied, and every minute
expired admissions are revoked and any node registered outside ``fedrec
coordinator admit`` is unregistered.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common.errors import ConfigError, ExitCode
from server.ops.coordinator import (
    PENDING,
    REGISTERED,
    REVOKE_PENDING,
    REVOKED,
    CoordinatorDir,
    admissions_lock,
    load_admissions,
    save_admissions,
)
from server.ops.flwr_cli import ControlError, FlowerCli, flower_environment
from server.ops.listeners import SuperLinkLog, check_ports_free
from server.ops.proxy import RunningProxy, find_nginx, proxy_spec, start_proxy
from server.ops.tls import LOOPBACK, LOOPBACK_NAME, LOOPBACK_SANS, certificate_info

logger = logging.getLogger(__name__)

CHECK_EVERY = 60.0  # seconds between admission checks while running


def control(directory: CoordinatorDir) -> FlowerCli:
    settings = directory.settings()
    return FlowerCli(
        home=directory.flwr_home, address=settings.local_address, ca=directory.tls.ca_cert
    )


def superlink_command(directory: CoordinatorDir) -> list[str]:
    settings = directory.settings()
    tls = directory.tls
    return [
        str(Path(sys.executable).with_name("flower-superlink")),
        "--ssl-ca-certfile",
        str(tls.ca_cert),
        "--ssl-certfile",
        str(tls.server_cert),
        "--ssl-keyfile",
        str(tls.server_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
        str(directory.database),
        "--host",
        LOOPBACK,  # never the public address: nginx forwards the Fleet API, nothing else
        "--port",
        str(settings.internal_port),
    ]


def superlink_environment(directory: CoordinatorDir) -> dict[str, str]:
    """Flower's environment, logging at INFO or finer.

    A start waits for uvicorn's "running on" line (:meth:`SuperLinkLog.bound`),
    which a quieter ``FLWR_LOG_LEVEL`` would drop.
    """
    env = flower_environment(directory.root / "flwr-home-superlink")
    if env.get("FLWR_LOG_LEVEL", "INFO").upper() not in ("DEBUG", "INFO"):
        env["FLWR_LOG_LEVEL"] = "INFO"
    return env


def check_ready_to_start(directory: CoordinatorDir) -> None:
    """Everything a start needs, each missing piece named with its fix."""
    settings = directory.settings()
    for path in (directory.tls.ca_cert, directory.tls.server_cert, directory.tls.server_key):
        if not path.is_file():
            raise ConfigError(
                f"{path} is missing; re-create the TLS material with "
                f"`fedrec coordinator init {directory.root} --san HOST --force-tls`."
            )
    info = certificate_info(directory.tls.server_cert)
    if info.expired():
        raise ConfigError(
            f"The server certificate {directory.tls.server_cert} expired on "
            f"{info.not_after:%Y-%m-%d}; merchants would refuse it. Renew it with `fedrec "
            f"coordinator init {directory.root} --san HOST --force-tls` and give merchants the "
            "new ca.pem."
        )
    missing = info.missing_loopback()
    if missing:
        names = " ".join(f"--san {n}" for n in info.sans if n.lower() not in LOOPBACK_SANS)
        raise ConfigError(
            f"The server certificate {directory.tls.server_cert} is not valid for "
            f"{' and '.join(missing)} (it names {', '.join(info.sans) or 'nothing'}): the "
            f"SuperLink listens on {LOOPBACK}:{settings.internal_port} behind the public proxy, "
            f"which verifies it as {LOOPBACK_NAME}, and `fedrec run` as {LOOPBACK}. Renew it "
            f"with `fedrec coordinator init {directory.root} {names or '--san HOST'} --host "
            f"{settings.host} --port {settings.port} --internal-port {settings.internal_port} "
            "--force-tls` (both names are added) and give merchants the new ca.pem."
        )
    find_nginx()
    if directory.pid_file.is_file():
        try:
            pid = int(directory.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            directory.pid_file.unlink(missing_ok=True)  # a stale file from a crash
        else:
            raise ConfigError(
                f"A coordinator for {directory.root} is already running (pid {pid}); stop it "
                f"first (Ctrl-C in its terminal, or `kill {pid}`)."
            )
    check_ports_free(directory)  # after: a running coordinator holds them, and says so


def wait_until_serving(
    directory: CoordinatorDir,
    process: subprocess.Popen,  # type: ignore[type-arg]
    timeout: float,
    log: SuperLinkLog,
) -> None:
    """Until the SuperLink logs that it runs on its port and completes a TLS handshake there.

    The log line makes the port this process's own (another listener taking it
    between the pre-flight check and the bind may answer the handshake); a
    SuperLink that exits is explained by its log (:meth:`SuperLinkLog.failure`).
    """
    settings = directory.settings()
    host, port = settings.local_address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(directory.tls.ca_cert))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise log.failure(f"The SuperLink exited (code {process.returncode}) while starting")
        if not log.bound():
            time.sleep(0.2)
            continue
        try:
            with (
                socket.create_connection((host, int(port)), timeout=1.0) as raw,
                context.wrap_socket(raw, server_hostname=host),
            ):
                return
        except (OSError, ssl.SSLError):
            time.sleep(0.2)
    raise log.failure(
        f"The SuperLink did not start serving on {settings.local_address} within {timeout:.0f} s"
    )


def reconcile(directory: CoordinatorDir, cli: FlowerCli, *, say: Callable[[str], None]) -> None:
    """Register pending admissions, apply revocations and expiries, drop unknown nodes."""
    with admissions_lock(directory):
        _reconcile(directory, cli, say=say)


def _reconcile(directory: CoordinatorDir, cli: FlowerCli, *, say: Callable[[str], None]) -> None:
    from common.node_keys import load_public_key

    admissions = load_admissions(directory)
    changed = False
    for admission in admissions.values():
        if admission.status in (PENDING, REGISTERED) and admission.expired():
            admission.status = REVOKE_PENDING if admission.node_id is not None else REVOKED
            say(f"admission of {admission.name} expired ({admission.expires_at}); revoking")
            changed = True
        if admission.status == PENDING:
            key_file = directory.root / "state" / f"{admission.name}.pub"
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(admission.public_key + "\n", encoding="ascii")
            load_public_key(key_file)
            admission.node_id = cli.register(key_file, name=admission.name)
            admission.status = REGISTERED
            say(f"admitted {admission.name} (key {admission.fingerprint})")
            changed = True
        elif admission.status == REVOKE_PENDING:
            if admission.node_id is not None:
                try:
                    cli.unregister(admission.node_id)
                except ControlError as exc:
                    say(f"could not unregister {admission.name}: {exc}")
                    continue
            admission.status = REVOKED
            say(f"revoked {admission.name} (key {admission.fingerprint})")
            changed = True
    if changed:
        save_admissions(directory, admissions)
    known = {a.node_id for a in admissions.values() if a.status == REGISTERED}
    for node in cli.nodes():
        node_id = int(node.get("node-id", -1))
        status = str(node.get("status", ""))
        if node_id not in known and status not in ("unregistered", ""):
            say(
                f"node {node_id} was registered outside `fedrec coordinator admit`; "
                "unregistering it"
            )
            try:
                cli.unregister(node_id)
            except ControlError as exc:
                say(f"could not unregister node {node_id}: {exc}")


def run_coordinator(
    directory: CoordinatorDir,
    *,
    say: Callable[[str], None],
    on_ready: Callable[[FlowerCli], None] | None = None,
    start_timeout: float = 60.0,
) -> int:
    """Run the SuperLink in the foreground until SIGINT/SIGTERM; returns its exit code."""
    check_ready_to_start(directory)
    settings = directory.settings()
    directory.logs.mkdir(parents=True, exist_ok=True)
    directory.database.parent.mkdir(parents=True, exist_ok=True)
    log_path = directory.logs / "superlink.log"
    superlink_log = SuperLinkLog.from_end(directory)
    with log_path.open("ab") as log:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n--- fedrec coordinator start {stamp}Z ---\n".encode())
        log.flush()
        process = subprocess.Popen(
            superlink_command(directory),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=superlink_environment(directory),
        )  # same process group: whatever stops the coordinator stops the SuperLink too
    directory.pid_file.write_text(str(os.getpid()))
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    proxy: RunningProxy | None = None
    try:
        wait_until_serving(directory, process, start_timeout, superlink_log)
        cli = control(directory)
        reconcile(directory, cli, say=say)  # admissions first: merchants may dial at once
        admitted = sum(a.status == REGISTERED for a in load_admissions(directory).values())
        proxy = start_proxy(proxy_spec(directory), nginx=find_nginx())
        proxy.wait_until_serving(timeout=start_timeout)
        say(
            f"coordinator serving on {settings.public_address} (nginx: Fleet API only, TLS; "
            f"certificate for {', '.join(settings.sans)}; SuperNode authentication on); "
            f"SuperLink on {settings.local_address}; {admitted} merchant(s) admitted; "
            f"logs: {directory.logs}"
        )
        say(
            "WARNING: Flower 1.41's Control API (run submission, node registration) has no "
            f"account authentication; it is served on {settings.local_address} only (loopback), "
            "so anyone with a shell on this machine can submit runs: keep it to the operator. "
            f"The public port {settings.port} answers the Fleet API alone. fedrec unregisters "
            "nodes it did not admit every minute."
        )
        if on_ready is not None:
            on_ready(cli)
        next_check = time.monotonic() + CHECK_EVERY
        while not stopping and process.poll() is None and proxy.process.poll() is None:
            time.sleep(0.2)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_EVERY
                try:
                    reconcile(directory, cli, say=say)
                except ControlError as exc:
                    say(f"admission check failed: {exc}")
        if process.poll() is not None and not stopping:
            raise superlink_log.failure(
                f"the SuperLink exited unexpectedly (code {process.returncode})"
            )
        if proxy.process.poll() is not None and not stopping:
            raise proxy.failure(
                f"nginx (the public proxy) exited unexpectedly (code {proxy.process.returncode})"
            )
        return ExitCode.OK
    finally:
        if proxy is not None:
            proxy.stop()  # first: no merchant request reaches a SuperLink on its way out
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        directory.pid_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say("coordinator stopped")


def coordinator_running(directory: CoordinatorDir) -> bool:
    try:
        pid = int(directory.pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def apply_now(directory: CoordinatorDir, *, say: Callable[[str], None]) -> None:
    """Apply admission changes at once when the coordinator runs (else at its next start)."""
    if not coordinator_running(directory):
        say("the coordinator is not running; the change applies when it starts")
        return
    reconcile(directory, control(directory), say=say)


__all__ = ["REVOKED", "apply_now", "run_coordinator"]
