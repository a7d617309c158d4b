"""Entry point of a merchant's SuperNode process: Flower's ``flower-supernode``, polling faster.

Flower 1.41's SuperNode sleeps a fixed 3 s whenever it finds no message
waiting, which puts up to 3 s of idle time into every message of every round.
There is no setting for it; this entry point replaces that one module's
``time.sleep`` so idle pulls wait at most ``FEDREC_SUPERNODE_POLL`` seconds
(default 0.5) and runs Flower's own ``flower-supernode`` main otherwise
unchanged. If Flower's layout changes, it warns and runs stock.
"""

from __future__ import annotations

import os
import sys
import time
import types

from common.errors import ExitCode


def _shorten_idle_poll(limit: float) -> bool:
    try:
        import flwr.supernode.start_client_internal as internal
    except ImportError:
        return False
    if getattr(internal, "time", None) is not time:
        return False
    shim = types.ModuleType("time")
    shim.__dict__.update(time.__dict__)
    shim.sleep = lambda seconds: time.sleep(min(seconds, limit))  # type: ignore[attr-defined]
    internal.time = shim  # type: ignore[attr-defined]
    return True


def watch_parent(interval: float = 0.5) -> None:
    """End this process (cleanly: Flower signs the node off) when ``fedrec merchant join`` dies."""
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="fedrec-parent-watch").start()


def main() -> int:
    watch_parent()
    limit = float(os.environ.get("FEDREC_SUPERNODE_POLL", "0.5"))
    if not _shorten_idle_poll(limit):
        print("fedrec: could not shorten the SuperNode's idle poll; using Flower's 3 s", flush=True)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv[0] = "flower-supernode"
    flower_supernode()
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
