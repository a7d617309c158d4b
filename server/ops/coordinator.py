"""A coordinator directory: TLS material, settings, admitted merchants, runs.

    DIR/coordinator.toml   public host:port, the SuperLink's loopback port, certificate names
    DIR/tls/               ca.pem (give to merchants), ca.key, server.pem, server.key (0600)
    DIR/catalog.json       the federation catalog sent to merchants at the start of a run
    DIR/admitted.json      admitted merchants: name, public key, expiry, Flower node id
    DIR/coordinator.key    the coordinator's Ed25519 ledger key (0600)
    DIR/state/             the SuperLink's database (registrations survive restarts)
    DIR/runs/NAME/         one directory per run: model, history, ledger, checkpoint
    DIR/proxy/             nginx.conf and nginx.pid of the public proxy (rewritten at start)
    DIR/logs/              the SuperLink's and the proxy's own logs

Two listeners: merchants dial the public ``host:port``, where nginx serves
the Fleet API only (``/v1/fleet/``; :mod:`server.ops.proxy`); the SuperLink itself
(Fleet, Control and Runtime APIs, all on one HTTPS port in Flower 1.41) binds
``127.0.0.1:internal-port``, so run submission and node registration are
reachable from this machine only. A ``coordinator.toml`` written before
``internal-port`` existed gets ``port + 1`` (``port - 1`` for 65535).

Admission is Flower's SuperNode authentication: an admitted merchant's public
key is registered with the running SuperLink (``flwr supernode register``) and
revoked by node id (``flwr supernode unregister``). Admissions made while the
coordinator is stopped wait in ``admitted.json`` and are registered at start.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.constants import COORDINATOR_KEY_FILE, RUN_CATALOG_FILE
from common.errors import ConfigError
from common.fileio import atomic_write_text
from common.naming import check_name
from server.ops.tls import LOOPBACK, TlsFiles

CONFIG_FILE = "coordinator.toml"
ADMITTED_FILE = "admitted.json"

PENDING = "pending"  # admitted, not yet registered with the SuperLink
REGISTERED = "registered"
REVOKE_PENDING = "revoke-pending"  # revoked while stopped: unregister at start
REVOKED = "revoked"


def default_internal_port(port: int) -> int:
    """The SuperLink's loopback port when none is given: the public port + 1 (- 1 for 65535)."""
    return port + 1 if port < 65535 else port - 1


@dataclass(frozen=True)
class CoordinatorSettings:
    host: str  # the address the public proxy binds (merchants dial it)
    port: int  # public port: the Fleet API only, through nginx
    internal_port: int  # the SuperLink's port on 127.0.0.1: every API, loopback only
    sans: tuple[str, ...]  # names merchants may dial (in the server certificate)

    def __post_init__(self) -> None:
        problems = [
            f"{key} must be 1-65535, got {value} (--{key} of `fedrec coordinator init`)"
            for key, value in (("port", self.port), ("internal-port", self.internal_port))
            if not 0 < value < 65536
        ]
        if self.internal_port == self.port:
            problems.append(
                f"internal-port must differ from port (both {self.port}): the public port is "
                "the proxy's (Fleet API only), the internal one the SuperLink's on 127.0.0.1; "
                f"pass e.g. --internal-port {default_internal_port(self.port)}"
            )
        if problems:
            raise ConfigError("; ".join(problems) + ".")

    @property
    def local_address(self) -> str:
        """How tools on this machine reach the SuperLink's Control API: loopback only."""
        return f"{LOOPBACK}:{self.internal_port}"

    @property
    def public_address(self) -> str:
        """Where the proxy listens (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class CoordinatorDir:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def tls(self) -> TlsFiles:
        tls = self.root / "tls"
        return TlsFiles(tls / "ca.pem", tls / "ca.key", tls / "server.pem", tls / "server.key")

    @property
    def catalog(self) -> Path:
        return self.root / RUN_CATALOG_FILE

    @property
    def admitted_path(self) -> Path:
        return self.root / ADMITTED_FILE

    @property
    def ledger_key(self) -> Path:
        return self.root / COORDINATOR_KEY_FILE

    @property
    def database(self) -> Path:
        return self.root / "state" / "superlink.db"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def proxy(self) -> Path:
        return self.root / "proxy"

    @property
    def pid_file(self) -> Path:
        return self.root / "state" / "coordinator.pid"

    def settings(self) -> CoordinatorSettings:
        path = self.config_path
        if not path.is_file():
            raise ConfigError(
                f"{self.root} is not a coordinator directory (no {CONFIG_FILE}). Create one with "
                f"`fedrec coordinator init {self.root} --san HOST`."
            )
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
            section = raw["coordinator"]
            port = int(section["port"])
            internal = int(section.get("internal-port", default_internal_port(port)))
            sans = tuple(str(s) for s in section["sans"])
            host = str(section["host"])
        except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: expected [coordinator] with host, port, internal-port and sans ({exc})."
            ) from exc
        try:
            return CoordinatorSettings(host=host, port=port, internal_port=internal, sans=sans)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def write_settings(directory: CoordinatorDir, settings: CoordinatorSettings) -> None:
    sans = ", ".join(json.dumps(s) for s in settings.sans)
    atomic_write_text(
        directory.config_path,
        "# fedrec coordinator (written by `fedrec coordinator init`)\n"
        "[coordinator]\n"
        f"host = {json.dumps(settings.host)}\n"
        f"port = {settings.port}  # public: nginx, Fleet API only\n"
        f"internal-port = {settings.internal_port}  # the SuperLink, on {LOOPBACK} only\n"
        f"sans = [{sans}]\n",
    )


# --- admission registry ---------------------------------------------------------------


@dataclass
class Admission:
    name: str
    public_key: str  # the OpenSSH line
    fingerprint: str
    admitted_at: str
    expires_at: str  # ISO time; "" = no expiry
    status: str = PENDING
    node_id: int | None = None

    def expired(self, now: dt.datetime | None = None) -> bool:
        if not self.expires_at:
            return False
        return (now or dt.datetime.now(dt.UTC)) >= dt.datetime.fromisoformat(self.expires_at)


@contextmanager
def admissions_lock(directory: CoordinatorDir) -> Iterator[None]:
    """Serialise admission changes between `admit`/`revoke` and the running coordinator."""
    import fcntl

    path = directory.root / "state" / "admissions.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_admissions(directory: CoordinatorDir) -> dict[str, Admission]:
    path = directory.admitted_path
    if not path.is_file():
        return {}
    try:
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return {name: Admission(**entry) for name, entry in raw.items()}
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable admission list ({exc}).") from exc


def save_admissions(directory: CoordinatorDir, admissions: dict[str, Admission]) -> None:
    atomic_write_text(
        directory.admitted_path,
        json.dumps({n: asdict(a) for n, a in sorted(admissions.items())}, indent=2),
    )


def new_admission(
    admissions: dict[str, Admission],
    *,
    name: str,
    public_key: bytes,
    fingerprint: str,
    valid_days: int,
    now: dt.datetime | None = None,
) -> Admission:
    """A pending admission, refused when the name is taken or the key was ever used."""
    check_name(name)
    current = admissions.get(name)
    if current is not None and current.status not in (REVOKED, REVOKE_PENDING):
        raise ConfigError(
            f"Merchant {name!r} is already admitted (key {current.fingerprint}, {current.status}). "
            f"Revoke it first (`fedrec coordinator revoke DIR {name}`) to admit a new key."
        )
    line = public_key.decode("ascii").strip()
    for other in admissions.values():
        if other.public_key == line:
            raise ConfigError(
                f"This key ({fingerprint}) was already admitted as {other.name!r} "
                f"({other.status}). Flower never registers a key twice: the merchant must make "
                "a new one with `fedrec merchant keygen DIR --overwrite`."
            )
    if valid_days < 0:
        raise ConfigError(f"--valid-days must be >= 0 (0: no expiry), got {valid_days}.")
    now = now or dt.datetime.now(dt.UTC)
    expires = (
        (now + dt.timedelta(days=valid_days)).isoformat(timespec="seconds") if valid_days else ""
    )
    admission = Admission(
        name=name,
        public_key=line,
        fingerprint=fingerprint,
        admitted_at=now.isoformat(timespec="seconds"),
        expires_at=expires,
    )
    admissions[name] = admission
    return admission
