"""The coordinator's public face: nginx serving the Fleet API only, before a loopback SuperLink.

Flower 1.41 serves its Fleet, Control and Runtime APIs over HTTPS on one port,
and the Control API (run submission, node registration) has no access
control in open-source Flower. ``fedrec coordinator start`` therefore binds
the SuperLink to ``127.0.0.1:internal-port`` and runs nginx (the Debian
package) as a child process on the public ``host:port``:

* TLS with the coordinator's certificate (merchants trust ``ca.pem``);
* ``/v1/fleet/ENDPOINT`` (what SuperNodes call; node authentication travels
  in request headers, which are passed on untouched) is proxied to the
  SuperLink on 127.0.0.1 over TLS, verified against ``ca.pem`` as
  ``localhost`` (nginx matches DNS names only, never IP address SANs);
* every other path, a Fleet path in any other spelling (dot segments,
  escapes, a query) and every method but POST is answered 404 / 403.

nginx's configuration, pid file and temporary directories live in
``DIR/proxy``, its logs in ``DIR/logs``: it never needs a root path, and it
writes no request or response body to disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, FedrecError
from common.fileio import atomic_write_text
from common.ports import bind_failure
from server.ops.coordinator import CoordinatorDir
from server.ops.listeners import proxy_port_in_use
from server.ops.tls import LOOPBACK, LOOPBACK_NAME

FLEET_PREFIX = "/v1/fleet/"
FLEET_REQUEST_URI = r"^/v1/fleet/[a-z0-9-]+$"  # the raw request line, exactly as SuperNodes send
INSTALL_HINT = (
    "install it with `sudo apt-get install -y nginx-light` (Debian/Ubuntu; the `nginx` package "
    "works too) and start again"
)
READ_TIMEOUT_S = 600  # a round may hold a request while a merchant uploads its model
UPSTREAM_KEEPALIVE_S = 4  # below uvicorn's 5 s, so nginx never reuses a connection it closed
SEARCH_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # nginx is often off a user's PATH


@dataclass(frozen=True)
class ProxySpec:
    """Where the proxy listens, where it forwards to, and the files it uses."""

    listen_host: str  # "0.0.0.0", "::", an address or a name
    listen_port: int
    upstream_port: int  # the SuperLink on 127.0.0.1
    server_cert: Path
    server_key: Path
    ca_cert: Path  # trusted for the upstream (the SuperLink's certificate)
    root: Path  # DIR/proxy
    logs: Path  # DIR/logs

    def __post_init__(self) -> None:
        if self.listen_port == self.upstream_port:
            raise ConfigError(
                f"The proxy cannot listen on the SuperLink's own port {self.listen_port}; set "
                "internal-port to another port in coordinator.toml."
            )

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"

    @property
    def error_log(self) -> Path:
        return self.logs / "proxy-error.log"

    @property
    def access_log(self) -> Path:
        return self.logs / "proxy-access.log"

    @property
    def listen(self) -> str:
        """nginx's ``listen`` address: ``[v6]:port``, ``host:port``, or ``port`` for all."""
        if not self.listen_host:
            return str(self.listen_port)
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def probe_host(self) -> str:
        """Where this machine dials the proxy: loopback for a wildcard address."""
        return {"": LOOPBACK, "0.0.0.0": LOOPBACK, "::": "::1"}.get(
            self.listen_host, self.listen_host
        )


def proxy_spec(directory: CoordinatorDir) -> ProxySpec:
    settings = directory.settings()
    tls = directory.tls
    return ProxySpec(
        listen_host=settings.host,
        listen_port=settings.port,
        upstream_port=settings.internal_port,
        server_cert=tls.server_cert.resolve(),
        server_key=tls.server_key.resolve(),
        ca_cert=tls.ca_cert.resolve(),
        root=directory.proxy.resolve(),
        logs=directory.logs.resolve(),
    )


def _quoted(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"\\;{}\n$'):
        raise ConfigError(
            f"{text}: nginx cannot name a path containing quotes, backslashes, ';', '{{', '}}' or "
            "'$'; move the coordinator directory to a plain path."
        )
    return f'"{text}"'


def render_config(spec: ProxySpec) -> str:
    """nginx.conf: TLS on the public address, POST /v1/fleet/NAME to the SuperLink, 404 else."""
    temp = {
        name: _quoted(spec.temp / name) for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    return f"""# Written by `fedrec coordinator start` each start (server/ops/proxy.py); edits lost.
# Public {spec.listen}: the Fleet API only. The SuperLink: {LOOPBACK}:{spec.upstream_port}.
worker_processes 1;
pid {_quoted(spec.pid_file)};
error_log {_quoted(spec.error_log)} notice;

events {{
    worker_connections 1024;
}}

http {{
    access_log {_quoted(spec.access_log)};
    server_tokens off;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};

    upstream superlink {{
        server {LOOPBACK}:{spec.upstream_port};
        keepalive 16;
        keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;
    }}

    server {{
        listen {spec.listen} ssl;
        ssl_certificate {_quoted(spec.server_cert)};
        ssl_certificate_key {_quoted(spec.server_key)};
        ssl_protocols TLSv1.2 TLSv1.3;

        client_max_body_size 0;
        client_body_timeout {READ_TIMEOUT_S}s;
        send_timeout {READ_TIMEOUT_S}s;

        location {FLEET_PREFIX} {{
            if ($request_uri !~ "{FLEET_REQUEST_URI}") {{
                return 404;
            }}
            limit_except POST {{
                deny all;
            }}
            proxy_pass https://superlink;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_pass_request_headers on;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {_quoted(spec.ca_cert)};
            proxy_ssl_name {LOOPBACK_NAME};  # nginx checks DNS names, never IP SANs
            proxy_ssl_server_name off;
            proxy_ssl_session_reuse on;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
            proxy_connect_timeout 10s;
            proxy_read_timeout {READ_TIMEOUT_S}s;
            proxy_send_timeout {READ_TIMEOUT_S}s;
        }}

        location / {{
            return 404;
        }}
    }}
}}
"""


def write_config(spec: ProxySpec) -> Path:
    spec.temp.mkdir(parents=True, exist_ok=True)
    spec.logs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.conf, render_config(spec))
    return spec.conf


def find_nginx() -> str:
    """The nginx binary, or a ConfigError saying how to install it."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *SEARCH_PATH])
    found = shutil.which("nginx", path=search)
    if found is None:
        raise ConfigError(
            "nginx is not installed (not on PATH, nor in /usr/sbin): `fedrec coordinator start` "
            "runs it on the public port so that only the Fleet API is reachable from the "
            f"network; {INSTALL_HINT}."
        )
    return found


def nginx_command(spec: ProxySpec, nginx: str) -> list[str]:
    """nginx in the foreground with this coordinator's prefix and configuration."""
    return [
        nginx,
        "-p",
        str(spec.root),
        "-c",
        str(spec.conf),
        "-g",
        "daemon off;",
    ]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """SIGTERM (nginx's fast shutdown) when the coordinator dies, even by SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class RunningProxy:
    """One nginx started by :func:`start_proxy`; its logs are read from where this start began."""

    spec: ProxySpec
    process: subprocess.Popen[bytes]
    log_offsets: tuple[tuple[Path, int], ...]

    def error_lines(self) -> list[str]:
        """The ``[emerg]``/``[alert]`` lines nginx wrote since it started."""
        lines: list[str] = []
        for path, offset in self.log_offsets:
            with contextlib.suppress(OSError), path.open("rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
                lines += [x.strip() for x in text.splitlines() if "[emerg]" in x or "[alert]" in x]
        return lines

    def errors(self, count: int = 3) -> str:
        """The last ``[emerg]``/``[alert]`` lines, joined."""
        return " | ".join(self.error_lines()[-count:]) or "(nothing in its error log)"

    def failure(self, what: str) -> FedrecError:
        """Why nginx stopped: its port taken (one sentence), else its last errors."""
        spec = self.spec
        line = bind_failure(self.error_lines())
        if line is not None:
            return proxy_port_in_use(port=spec.listen_port, listen=spec.listen, reason=line)
        return FedrecError(f"{what}: {self.errors()}; its logs: {spec.logs / 'proxy*.log'}")

    def wait_until_serving(self, *, timeout: float) -> None:
        """Until nginx completes a TLS handshake with the coordinator's certificate."""
        spec = self.spec
        context = ssl.create_default_context(cafile=str(spec.ca_cert))
        context.check_hostname = False  # the listen address need not be a certificate name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.failure(
                    f"nginx exited (code {self.process.returncode}) while starting on {spec.listen}"
                )
            try:
                with (
                    socket.create_connection((spec.probe_host, spec.listen_port), 1.0) as raw,
                    context.wrap_socket(raw),
                ):
                    return
            except (OSError, ssl.SSLError):
                time.sleep(0.1)
        raise FedrecError(
            f"nginx did not serve TLS on {spec.listen} within {timeout:.0f} s: {self.errors()}"
        )

    def stop(self, *, grace: float = 5.0) -> None:
        """SIGQUIT (finish requests), then SIGTERM (at once), then SIGKILL: never left running."""
        for sig in (signal.SIGQUIT, signal.SIGTERM):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
        self.process.kill()
        self.process.wait()


def start_proxy(spec: ProxySpec, *, nginx: str) -> RunningProxy:
    """Write the configuration and start nginx (in the coordinator's process group)."""
    write_config(spec)
    output = spec.logs / "proxy.log"
    offsets = tuple((path, _size(path)) for path in (output, spec.error_log))
    with output.open("ab") as log:
        process = subprocess.Popen(
            nginx_command(spec, nginx),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    return RunningProxy(spec=spec, process=process, log_offsets=offsets)
