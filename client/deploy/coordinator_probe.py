"""Checking the way in before a SuperNode dials: the address, the CA file, a TLS handshake.

Flower reports every connection failure as "unavailable"; a handshake of our
own first tells apart nobody listening, an unresolvable name, a certificate
from another CA, an expired certificate and one for another host name, each
as one sentence with its fix (:class:`JoinError`).
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from common.errors import ConfigError, ExitCode, FedrecError


class JoinError(FedrecError):
    """The merchant cannot join: the coordinator is unreachable, untrusted or refuses the key."""

    exit_code = ExitCode.JOIN_FAILED


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--coordinator must be HOST:PORT, e.g. coordinator.example.com:9092; got {text!r}."
        )
    return host.strip("[]"), int(port)


def check_ca(path: Path) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"Cannot read the CA certificate {path}: {exc.strerror}.") from exc
    except ValueError as exc:
        raise ConfigError(
            f"{path} is not a PEM certificate; pass the ca.pem the coordinator operator gave you."
        ) from exc


def probe_coordinator(host: str, port: int, ca: Path, *, timeout: float = 5.0) -> None:
    """A TLS handshake with the coordinator; each failure explained with its fix."""
    where = f"{host}:{port}"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise JoinError(
            f"Cannot resolve the coordinator's host name {host!r} ({exc.strerror}); check "
            "--coordinator."
        ) from exc
    except (TimeoutError, OSError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise JoinError(
            f"Cannot reach the coordinator at {where} ({reason}). Check --coordinator and that "
            "`fedrec coordinator start` is running there and its port is open to you."
        ) from exc
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with raw, context.wrap_socket(raw, server_hostname=host):
            return
    except ssl.SSLCertVerificationError as exc:
        code = exc.verify_code
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            message = (
                f"The coordinator's TLS certificate at {where} has expired; ask the operator to "
                "renew it (`fedrec coordinator init DIR --force-tls`) and send you the new ca.pem."
            )
        elif code == 62:  # X509_V_ERR_HOSTNAME_MISMATCH
            message = (
                f"The coordinator's certificate is not valid for {host!r}; dial it by a name or "
                "address it was issued for (the operator's `--san` values)."
            )
        else:
            message = (
                f"The coordinator at {where} presented a certificate that {ca} does not vouch for "
                f"({exc.verify_message}): the CA file is wrong or outdated. Ask the operator for "
                "the federation's current ca.pem."
            )
        raise JoinError(message) from exc
    except (ssl.SSLError, OSError) as exc:
        raise JoinError(
            f"TLS with the coordinator at {where} failed ({exc}); is that address a fedrec "
            "coordinator?"
        ) from exc
