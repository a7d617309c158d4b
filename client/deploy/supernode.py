"""``fedrec merchant join``: enrol the merchant's data, check the way in, run its SuperNode.

Before anything connects, the event log is validated and pseudonymised into
the state directory (:mod:`client.deploy.enrolment`), the node key is checked, and a
TLS handshake with the coordinator tells apart the failures Flower reports
only as "unavailable": nobody listening, a certificate from another CA, an
expired certificate, a certificate for another host name. Then Flower's
SuperNode runs in the foreground (:mod:`client.deploy.supernode_main`) with the
merchant's ``state-dir`` as node config; its log goes to
``STATE/logs/supernode.log`` and its known failures become one sentence each.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from client.deploy.coordinator_probe import JoinError, check_ca, parse_address, probe_coordinator
from client.deploy.enrolment import enrol
from client.deploy.node_key import PUBLIC_KEY_FILE, check_private_key
from client.deploy.round_lines import LedgerFollower
from client.deploy.run_guard import operator_key_for, pin_operator_key
from client.deploy.warm_start import SOCKET_FILE, write_launcher
from client.state.policy import ensure_policy
from common.constants import MERCHANT_LEDGER_FILE, MERCHANT_POLICY_FILE
from common.data.formats import DEFAULT_FORMAT
from common.errors import ConfigError, ExitCode
from common.flower_env import FLOWER_ENV, with_flower_commands
from common.privacy.signing import key_fingerprint

PID_FILE = "supernode.pid"
RESTART_WINDOW = 90.0  # seconds a crashed node's old session may block re-activation
SERVED_AFTER = 15.0  # a SuperNode that ran this long had been admitted
STARTED = "Starting Flower SuperNode"  # Flower's line once the node runs


@dataclass(frozen=True)
class JoinSpec:
    coordinator: str  # HOST:PORT
    ca: Path
    key_dir: Path
    data: Path
    state: Path
    name: str
    fmt: str = DEFAULT_FORMAT
    port: int = 0  # the SuperNode's local ClientApp port; 0 picks a free one
    poll: float = 0.5  # seconds between idle pulls
    warm: bool = True  # fork ClientApps from a pre-imported process (client/deploy/warm_start.py)
    operator_key: Path | None = None  # operator.pub to pin (None: the one pinned before)
    verbose: bool = False  # show Flower's own lines too (they always go to logs/supernode.log)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def supernode_command(spec: JoinSpec, *, port: int) -> list[str]:
    node_config = f"state-dir={json.dumps(str(spec.state.resolve()))}"
    return [
        sys.executable,
        "-m",
        "client.deploy.supernode_main",
        "--superlink",
        spec.coordinator,
        "--root-certificates",
        str(spec.ca.resolve()),
        "--auth-supernode-private-key",
        str(check_private_key(spec.key_dir).resolve()),
        "--node-config",
        node_config,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


# Known SuperNode log lines -> what they mean for the merchant.
def _not_admitted(spec: JoinSpec) -> str:
    return (
        f"The coordinator refused this merchant's node key ({spec.key_dir / PUBLIC_KEY_FILE}): it "
        "is not admitted, or its admission was revoked or expired. Ask the operator to run "
        f"`fedrec coordinator admit DIR {spec.name} {PUBLIC_KEY_FILE}` (a revoked key needs a "
        "new one: `fedrec merchant keygen DIR --overwrite`)."
    )


def _running(pid: int, *, grace: float = 5.0) -> bool:
    """Whether ``pid`` is alive; a process that was just killed gets ``grace`` s to go.

    A zombie (killed, not yet reaped by whoever inherited it) counts as gone.
    """
    deadline = time.monotonic() + grace
    while True:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = ""
        if state == "Z":
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)


def _previous_crash(state: Path) -> bool:
    """True when a previous SuperNode of this state directory stopped without signing off."""
    path = state / PID_FILE
    if not path.is_file():
        return False
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return True
    if not _running(pid):
        return True
    raise ConfigError(
        f"A SuperNode for {state} is already running (pid {path.read_text().strip()}); one "
        "state directory serves one node. Stop it first."
    )


def join(spec: JoinSpec, *, say: Callable[[str], None]) -> int:
    """Check, enrol, then run the SuperNode until stopped; returns an exit code.

    Every check (address, CA, node key, operator key, a TLS handshake with the
    coordinator) comes before anything is written to ``spec.state``; enrolment
    writes only once the event log is read whole (:mod:`client.deploy.enrolment`).
    """
    host, port = parse_address(spec.coordinator)
    check_ca(spec.ca)
    check_private_key(spec.key_dir)
    operator_key_for(spec.state, spec.operator_key)  # missing, unreadable or changed: refused
    probe_coordinator(host, port, spec.ca)  # unreachable or untrusted: nothing written yet
    enrolment = enrol(spec.state, data=spec.data, fmt=spec.fmt, name=spec.name)
    operator, newly_pinned = pin_operator_key(spec.state, spec.operator_key)
    policy = ensure_policy(spec.state / MERCHANT_POLICY_FILE)
    say(
        f"{spec.name}: {enrolment.events} events, {enrolment.users} users (pseudonymised with "
        f"this merchant's key), {enrolment.items} items; state in {spec.state}"
        + ("" if enrolment.changed else " (unchanged since the last join)")
    )
    say(
        f"operator key {key_fingerprint(operator)} "
        + ("pinned now: check this fingerprint with the operator" if newly_pinned else "(pinned)")
        + "; only runs it signed are executed"
    )
    say(f"policy ({spec.state / MERCHANT_POLICY_FILE}): {policy.describe()}")
    say(f"coordinator {spec.coordinator} verified against {spec.ca}")
    zygote = _start_zygote(spec) if spec.warm else None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # clean up below, even mid-retry
    try:
        return _serve(spec, say=say)
    except KeyboardInterrupt:
        say(f"{spec.name} left the federation")
        return ExitCode.OK
    finally:
        if zygote is not None:  # it and every ClientApp it forked (one process group)
            _stop_group(zygote, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                zygote.wait(timeout=5)
            _stop_group(zygote, signal.SIGKILL)
            (spec.state / SOCKET_FILE).unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _environment(spec: JoinSpec) -> dict[str, str]:
    env = with_flower_commands(
        {
            **os.environ,
            **FLOWER_ENV,
            "FLWR_HOME": str((spec.state / "flwr-home").resolve()),
            "FEDREC_SUPERNODE_POLL": str(spec.poll),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Always first on the PATH: every ClientApp process goes through fedrec's run check
    # (client/deploy/run_guard.py); the launcher forks from the warm process when there is one.
    env["PATH"] = str(write_launcher(spec.state)) + os.pathsep + env.get("PATH", "")
    return env


def _start_zygote(spec: JoinSpec) -> subprocess.Popen[str]:
    logs = spec.state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "warm.log").open("a", encoding="utf-8") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "client.deploy.warm_start", str(spec.state.resolve())],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(spec),
            text=True,
            start_new_session=True,
        )


def _serve(spec: JoinSpec, *, say: Callable[[str], None]) -> int:
    # Flower re-activates a node only once the coordinator has marked its previous session
    # offline (about a minute without heartbeats): after a crash of this merchant, or a
    # restart of the coordinator, a refusal is retried for a while; a first refusal is final.
    deadline = time.monotonic() + (RESTART_WINDOW if _previous_crash(spec.state) else 0.0)
    while True:
        started = time.monotonic()
        outcome = _run_supernode(spec, say=say)
        if outcome == "stopped":
            return ExitCode.OK
        if outcome == "lost":  # the coordinator went away (a restart?): keep trying, as a daemon
            say(f"the coordinator at {spec.coordinator} is unreachable; retrying in 10 s")
            time.sleep(10.0)
            continue
        if time.monotonic() - started > SERVED_AFTER:  # it was in: the coordinator restarted
            deadline = time.monotonic() + RESTART_WINDOW
        if time.monotonic() >= deadline:
            raise JoinError(_not_admitted(spec))
        say(
            "the coordinator still holds this merchant's previous session (it ended without "
            "signing off); retrying for up to a minute and a half"
        )
        time.sleep(5.0)


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _stop_group(process: subprocess.Popen[str], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _run_supernode(spec: JoinSpec, *, say: Callable[[str], None]) -> str:
    """One SuperNode process: 'stopped' (by us), 'not-admitted', 'lost' (the coordinator went
    away), or raises with the reason.

    The SuperNode runs in its own process group (it starts Flower's SuperExec
    and ClientApp processes): stopping it stops them all.
    """
    logs = spec.state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = _environment(spec)
    process = subprocess.Popen(
        supernode_command(spec, port=spec.port or _free_port()),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    (spec.state / PID_FILE).write_text(str(process.pid))
    lines: queue.Queue[str | None] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        _stop_group(process, signal.SIGTERM)  # Flower signs the node off on SIGTERM

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    verdict = ""
    exited_at: float | None = None
    rounds = LedgerFollower(spec.state, ledger=spec.state / MERCHANT_LEDGER_FILE)
    if not spec.verbose:
        say(f"Flower's own lines go to {logs / 'supernode.log'} (--verbose shows them here)")
    try:
        with (logs / "supernode.log").open("a", encoding="utf-8") as log:
            while True:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    log.write(line)
                    log.flush()
                    verdict = verdict or _classify(line, spec)
                    shown = _readable(line)
                    if shown and (spec.verbose or shown.startswith("error:")):
                        say(shown)
                    elif STARTED in line:
                        say(f"{spec.name}: SuperNode started; waiting for runs")
                for done in rounds.lines():
                    say(done)
                if process.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > 1.0:  # its helpers may linger: stop them
                        _stop_group(process, signal.SIGTERM)
                        break
                elif verdict and not stopping:
                    _stop_group(process, signal.SIGTERM)
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if process.poll() is None:
            _stop_group(process, signal.SIGKILL)
            process.wait()
        (spec.state / PID_FILE).unlink(missing_ok=True)
    if stopping:
        say(f"{spec.name} left the federation")
        return "stopped"
    if verdict in ("not-admitted", "lost"):
        return verdict
    if verdict:
        raise JoinError(verdict)
    if code == 0:
        raise JoinError(
            "The coordinator ended this merchant's session: its key was revoked or its "
            "admission expired. Ask the operator to admit a new key."
        )
    raise JoinError(f"The SuperNode exited with code {code}; see {logs / 'supernode.log'}.")


def _classify(line: str, spec: JoinSpec) -> str:
    if "code: 2004" in line or "Failed to activate SuperNode" in line or "code: 2001" in line:
        return "not-admitted"
    if "CERTIFICATE_VERIFY_FAILED" in line or "SSL/TLS handshake error" in line:
        return (
            f"The coordinator's certificate is not signed by {spec.ca}: ask the operator for the "
            "federation's current ca.pem."
        )
    if "Giving up reconnection" in line:
        return "lost"
    return ""


_NOISE = ("server process", "application startup", "Uvicorn running", "Waiting for application")


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def _readable(line: str) -> str:
    """Flower's INFO/WARNING/ERROR lines without colour codes and padding; nothing else."""
    text = _COLOUR.sub("", line).strip()
    if any(noise in text for noise in _NOISE):
        return ""
    for level in ("INFO", "WARNING", "ERROR"):
        if text.startswith(level):
            body = text[len(level) :].lstrip(" :")
            return f"{level.lower()}: {body}" if level != "INFO" else body
    return ""
