"""TLS material for the coordinator, made with the ``cryptography`` package.

``fedrec coordinator init`` makes a private certificate authority (CA) and a
server certificate signed by it, valid for the host names and IP addresses
merchants will dial (subject alternative names) and always for 127.0.0.1 and
localhost: the SuperLink listens on 127.0.0.1 only, behind the public proxy;
Flower's SuperExec and ``fedrec run`` verify it as the IP address 127.0.0.1,
nginx as the DNS name localhost (nginx matches DNS names only, never IP
address SANs). Merchants get ``ca.pem`` only; private keys never leave the coordinator
directory and are written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError
from common.fileio import atomic_write_bytes

LOOPBACK = "127.0.0.1"  # the SuperLink's only address, so always a name in its certificate
LOOPBACK_NAME = "localhost"  # the name nginx verifies it by (nginx ignores IP address SANs)
LOOPBACK_SANS = (LOOPBACK, LOOPBACK_NAME)


@dataclass(frozen=True)
class TlsFiles:
    """Where one coordinator keeps its TLS material."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrec federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def parse_san(value: str) -> x509.GeneralName:
    """An IP address or DNS name a merchant will use to reach the coordinator."""
    text = value.strip()
    if not text:
        raise ConfigError("An empty --san was given; pass a host name or IP address.")
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if any(c.isspace() for c in text) or "/" in text or ":" in text:
        raise ConfigError(
            f"--san {value!r} is neither an IP address nor a DNS name; pass e.g. "
            "--san coordinator.example.com or --san 10.0.0.5."
        )
    return x509.DNSName(text)


def _require_names(sans: list[str]) -> None:
    if not sans:
        raise ConfigError(
            "The server certificate needs at least one name merchants dial: pass --san HOST "
            "(repeatable), e.g. --san 127.0.0.1 --san coordinator.example.com."
        )


def with_loopback(sans: list[str]) -> list[str]:
    """The names merchants dial, then 127.0.0.1 and localhost where they are missing."""
    _require_names(sans)
    given = {parse_san(s.lower()) for s in sans}  # DNS names match case-insensitively
    return [*sans, *(name for name in LOOPBACK_SANS if parse_san(name) not in given)]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    atomic_write_bytes(path, pem)
    os.chmod(path, 0o600)


def make_tls(
    files: TlsFiles, *, sans: list[str], valid_days: int, now: dt.datetime | None = None
) -> None:
    """Create the CA and a server certificate for ``sans``, valid ``valid_days`` from now."""
    _require_names(sans)
    if valid_days < 1:
        raise ConfigError(f"--valid-days must be at least 1, got {valid_days}.")
    names = [parse_san(s) for s in sans]
    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("fedrec federation CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(sans[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    _write_key(files.ca_key, ca_key)
    _write_key(files.server_key, server_key)
    atomic_write_bytes(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    sans: tuple[str, ...]
    not_after: dt.datetime

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or dt.datetime.now(dt.UTC)) >= self.not_after

    def missing_loopback(self) -> tuple[str, ...]:
        """Which of 127.0.0.1 and localhost the certificate lacks (the SuperLink needs both)."""
        named = {s.lower() for s in self.sans}
        return tuple(name for name in LOOPBACK_SANS if name not in named)


def certificate_info(path: Path) -> CertificateInfo:
    """Subject, names and expiry of a PEM certificate (for start-up checks and messages)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable PEM certificate ({exc}).") from exc
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(
            [str(n) for n in ext.get_values_for_type(x509.IPAddress)]
            + list(ext.get_values_for_type(x509.DNSName))
        )
    except x509.ExtensionNotFound:
        sans = ()
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(), sans=sans, not_after=cert.not_valid_after_utc
    )
