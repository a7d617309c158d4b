"""The coordinator's two listeners: free before a start, and in one sentence why one failed.

Flower 1.41's SuperLink serves its Fleet, Control and ServerAppIo (runtime)
APIs on one HTTPS port, ``127.0.0.1:internal-port``; nginx serves the public
``host:port``. Both are checked before anything starts (:func:`check_ports_free`),
and because another process can take a port between that check and the bind,
a start also reads the SuperLink's log from where it began
(:class:`SuperLinkLog`): the port is the SuperLink's only once uvicorn logged
that it runs on it, and a SuperLink that exits is explained by its own bind
error, never by Flower's colour-coded shutdown lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import FedrecError
from common.ports import PortInUseError, bind_error, bind_failure, clean_lines, describe, in_use
from server.ops.coordinator import CoordinatorDir
from server.ops.tls import LOOPBACK

RUNNING = re.compile(r"Uvicorn running on \S+://(\S+?):(\d+)\b")
REASON = re.compile(r"(\[Errno \d+\].*|bind\(\) to .*)")  # uvicorn's and nginx's own words
SHUTDOWN_NOISE = re.compile(
    r"lifespan: (stop|shutdown)|Application shutdown complete|Waiting for application "
    r"shutdown|Finished server process|Shutting down",
    re.IGNORECASE,
)


def _reason(line: str) -> str:
    found = REASON.search(line)
    return found.group(1) if found else line


def superlink_port_in_use(directory: CoordinatorDir, reason: str) -> PortInUseError:
    settings = directory.settings()
    return PortInUseError(
        f"port {settings.internal_port} is in use: the SuperLink (Fleet, Control and "
        f"ServerAppIo APIs) cannot listen on {settings.local_address} ({reason}); stop the "
        f"process that holds it or set internal-port in {directory.config_path} to a free port."
    )


def proxy_port_in_use(
    *, port: int, listen: str, reason: str, config: str = "coordinator.toml"
) -> PortInUseError:
    return PortInUseError(
        f"port {port} is in use: nginx (the public proxy, Fleet API only) cannot listen on "
        f"{listen} ({_reason(reason)}); stop the process that holds it or set port in "
        f"{config} to a free port."
    )


def check_ports_free(directory: CoordinatorDir) -> None:
    """Refuse a start whose SuperLink or public port another process holds (both named).

    Only a port in use is refused here: a public host that is not this machine's
    address is left to nginx, which names it.
    """
    settings = directory.settings()
    problems = []
    internal = bind_error(LOOPBACK, settings.internal_port)
    if internal is not None and in_use(internal):
        problems.append(superlink_port_in_use(directory, describe(internal)))
    public = bind_error(settings.host, settings.port)
    if public is not None and in_use(public):
        problems.append(
            proxy_port_in_use(
                port=settings.port,
                listen=settings.public_address,
                reason=describe(public),
                config=str(directory.config_path),
            )
        )
    if problems:
        raise PortInUseError(" ".join(str(p) for p in problems))


@dataclass(frozen=True)
class SuperLinkLog:
    """The SuperLink's log from the offset where this start began."""

    directory: CoordinatorDir
    offset: int

    @property
    def path(self) -> Path:
        return self.directory.logs / "superlink.log"

    @classmethod
    def from_end(cls, directory: CoordinatorDir) -> SuperLinkLog:
        path = directory.logs / "superlink.log"
        try:
            return cls(directory, path.stat().st_size)
        except OSError:
            return cls(directory, 0)

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                return clean_lines(handle.read().decode(errors="replace"))
        except OSError:
            return []

    def bound(self) -> bool:
        """True once uvicorn logged that it runs on the SuperLink's own port."""
        port = str(self.directory.settings().internal_port)
        return any(
            (m := RUNNING.search(x)) is not None and m.group(2) == port for x in self.lines()
        )

    def summary(self, count: int = 3) -> str:
        """The last lines worth reading: errors first, never the shutdown that follows them."""
        lines = [x for x in self.lines() if not SHUTDOWN_NOISE.search(x)]
        errors = [x for x in lines if re.search(r"\b(ERROR|CRITICAL|Traceback)\b|Error:", x)]
        return " | ".join((errors or lines)[-count:]) or f"(nothing in {self.path})"

    def failure(self, what: str) -> FedrecError:
        """Why the SuperLink stopped: its port taken, else its last errors (``what`` happened)."""
        line = bind_failure(self.lines())
        if line is not None:
            return superlink_port_in_use(self.directory, _reason(line))
        return FedrecError(f"{what}: {self.summary()}; its log: {self.path}")


__all__ = ["SuperLinkLog", "check_ports_free", "proxy_port_in_use"]
