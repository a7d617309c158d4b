"""Ports fedrec listens on: is one free, and why a listener could not bind it.

Two servers on one port must be refused, never shared: gRPC's default
``SO_REUSEPORT`` would let a second ``fedrec serve`` bind a port already
serving and the kernel would split connections between the two processes (a
shop's users answered by another shop's model). :func:`bind_error` is the
pre-flight check (a plain bind with ``SO_REUSEADDR``, as gRPC, uvicorn and
nginx bind, and without ``SO_REUSEPORT``); :func:`bind_failure` reads why a
server that started anyway could not bind (the race the pre-flight check
cannot close) from the lines it logged.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Iterable

from common.errors import ConfigError

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
IN_USE = re.compile(r"address already in use", re.IGNORECASE)


class PortInUseError(ConfigError):
    """A port fedrec must listen on is held by another process (or cannot be bound here)."""


def bind_error(host: str, port: int) -> OSError | None:
    """Why this machine cannot listen on ``host:port`` now, or None when it can.

    Every address ``host`` resolves to is tried, as a listener binds them all.
    Port 0 (any free port) is always possible.
    """
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, f"{host} does not resolve ({exc.strerror})")
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
                sock.listen(1)
            except OSError as exc:
                return exc
    return None


def describe(error: OSError) -> str:
    """The OS's words for a bind failure: ``Address already in use``."""
    return error.strerror or str(error)


def in_use(error: OSError) -> bool:
    return error.errno == errno.EADDRINUSE


def clean_lines(text: str) -> list[str]:
    """Log lines without terminal colour codes or blank lines."""
    return [s for s in (ANSI_ESCAPE.sub("", x).strip() for x in text.splitlines()) if s]


def bind_failure(lines: Iterable[str]) -> str | None:
    """The logged line saying a listener could not bind because the address is in use."""
    for line in lines:
        if IN_USE.search(line):
            return line
    return None


__all__ = ["PortInUseError", "bind_error", "bind_failure", "clean_lines", "describe", "in_use"]
