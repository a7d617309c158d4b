"""Warm ClientApp processes: Flower's own ``flwr-clientapp``, forked from a pre-imported process.

Flower 1.41's SuperNode runs every message in a fresh ``flwr-clientapp``
process, which imports torch, Opacus and fedrec's ClientApp again each time:
seconds per message, more than a DP round's training on this hardware. So
``fedrec merchant join`` also starts a *zygote*: one process that imports
Flower's ClientApp runtime, torch, Opacus and fedrec once, then only forks.

The SuperNode finds ``flwr-clientapp`` on its ``PATH`` in ``STATE/bin``: a
small launcher that hands its arguments, environment, working directory and
standard streams (as file descriptors) to the zygote over a Unix socket
(``STATE/warm.sock``, mode 0600), and exits with the status of the forked
child, which runs Flower's unchanged ``flwr-clientapp`` main behind fedrec's
run check (:mod:`client.deploy.run_guard`). Nothing of Flower's protocol changes: this
only removes import time. Without the zygote the launcher runs the same
guarded ``flwr-clientapp`` in a fresh interpreter: slower, never unchecked.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import traceback
from pathlib import Path

SOCKET_FILE = "warm.sock"
BIN_DIR = "bin"
PRELOAD = (
    "flwr.supernode.cli.flwr_clientapp",
    "flwr.supernode.runtime.run_clientapp",
    "torch",
    "torch.optim",
    "numpy",
    "pandas",
    "opacus",
    "client.client_app",
    "client.training.private",
    "client.training.dp_optimizer",
    "client.deploy.enrolment",
    "common.privacy.accounting",
    "common.privacy.records",
    "flwr.client.mod",
    "client.deploy.run_guard",
)

_LAUNCHER = """#!{python} -I
# fedrec: `flwr-clientapp` forked from this merchant's warm process (client/deploy/warm_start.py).
import json, os, socket, struct, sys
try:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn.connect({socket_path!r})
except OSError:
    os.execv({python!r}, [{python!r}, "-I", "-m", "client.deploy.run_guard"] + sys.argv[1:])
request = {{"argv": ["flwr-clientapp"] + sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}
socket.send_fds(conn, [json.dumps(request).encode()], [0, 1, 2])
status = conn.recv(4)
sys.exit(struct.unpack("!i", status)[0] if len(status) == 4 else 1)
"""


def write_launcher(state: Path) -> Path:
    """``STATE/bin/flwr-clientapp``; returns the directory to put first on the PATH."""
    bin_dir = state.resolve() / BIN_DIR
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "flwr-clientapp"
    launcher.write_text(
        _LAUNCHER.format(
            python=sys.executable,
            socket_path=str(state.resolve() / SOCKET_FILE),
        ),
        encoding="utf-8",
    )
    launcher.chmod(0o700)
    return bin_dir


def _child(request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become ``flwr-clientapp ARGS`` with the launcher's streams."""
    code = 1
    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request["env"]).items()})  # type: ignore[call-overload]
        sys.argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        from client.deploy.run_guard import main

        main()  # Flower's flwr-clientapp, after fedrec checked the run (client/deploy/run_guard.py)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001  (report anything, then exit like a process would)
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve(state: Path) -> None:
    """The zygote: import everything once, then fork one child per launcher request."""
    import importlib

    for module in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    for sig in (signal.SIGINT, signal.SIGTERM):  # imports install handlers: the zygote just ends
        signal.signal(sig, signal.SIG_DFL)
    path = state.resolve() / SOCKET_FILE
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    old_umask = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    server.listen(32)
    waiting: dict[int, socket.socket] = {}
    parent = os.getppid()
    print("warm ClientApp process ready", flush=True)
    while os.getppid() == parent:  # ``fedrec merchant join`` is alive
        readable, _, _ = select.select([server], [], [], 0.05)
        if readable:
            conn, _ = server.accept()
            try:
                payload, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(payload)
            except (OSError, ValueError):
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                server.close()
                for other in waiting.values():
                    other.close()
                conn.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            waiting[pid] = conn
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            done = waiting.pop(pid) if pid in waiting else None
            if done is not None:
                with contextlib.suppress(OSError):
                    done.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
                done.close()
    path.unlink(missing_ok=True)
    # The merchant process is gone: so must every ClientApp forked from here (they share this
    # process group; a Flower ClientApp whose SuperNode vanished can otherwise wait forever).
    if os.getpgid(0) == os.getpid():  # only ever our own group (join starts us as its leader)
        os.killpg(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
