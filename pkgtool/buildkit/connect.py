"""Reaching a BuildKit daemon: dockerd's built-in one, or a standalone buildkitd.

dockerd exposes BuildKit's Control API at ``POST /grpc`` and the client session at
``POST /session``, each an HTTP/1.1 connection upgraded to h2c ("hijacked").  grpcio cannot
dial a hijacked socket, so :class:`Relay` listens on a private unix socket and splices each
connection grpcio opens onto a freshly hijacked docker socket.  A standalone buildkitd
(``unix://`` or ``tcp://``) is dialled directly.  ``tcp://`` builders of either kind may use
TLS (:mod:`pkgtool.buildkit.tls`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pkgtool import settings
from pkgtool.buildkit.tls import TLSOptions, grpc_channel_options, grpc_credentials, ssl_context
from pkgtool.errors import PkgtoolError

DOCKER_API_VERSION = "v1.41"
_MAX_RESPONSE_HEAD = 64 * 1024
_CONNECT_TIMEOUT = 10.0
# BuildKit status updates and exporter responses can exceed grpcio's 4 MiB default.
GRPC_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class BuilderAddress:
    """Where BuildKit is: ``kind`` is ``dockerd`` (via the Docker API) or ``buildkitd``;
    ``tls`` is set for ``tcp://`` addresses that use TLS."""

    kind: str
    url: str
    tls: TLSOptions | None = None

    def __str__(self) -> str:
        return self.url if self.kind == "buildkitd" else f"dockerd at {self.url}"


def resolve_address(address: str | None = None, *, tls: TLSOptions | None = None) -> BuilderAddress:
    """``--builder`` > ``$BUILDKIT_HOST`` > the Docker daemon (``settings.docker_host()``).

    ``docker`` or ``docker://<docker host>`` select a Docker daemon explicitly; ``unix://``
    and ``tcp://`` name a standalone buildkitd.  ``tls`` applies to ``tcp://`` addresses
    only (a unix socket is protected by its file permissions).
    """
    address = address or os.environ.get("BUILDKIT_HOST") or None
    if address is None or address == "docker":
        return _with_tls(BuilderAddress("dockerd", settings.docker_host()), tls)
    if address.startswith("docker://"):
        url = address[len("docker://"):] or settings.docker_host()
        if urlsplit(url).scheme not in ("unix", "tcp"):
            raise PkgtoolError(f"unsupported Docker daemon address {url!r}: use docker://unix://PATH or docker://tcp://HOST:PORT")
        return _with_tls(BuilderAddress("dockerd", url), tls)
    scheme = urlsplit(address).scheme
    if scheme in ("unix", "tcp"):
        return _with_tls(BuilderAddress("buildkitd", address), tls)
    raise PkgtoolError(
        f"unsupported builder address {address!r}: use unix://PATH, tcp://HOST:PORT or docker[://DOCKER_HOST]"
    )


def _with_tls(address: BuilderAddress, tls: TLSOptions | None) -> BuilderAddress:
    if tls is None or tls.empty or not address.url.startswith("tcp://"):
        return address
    return BuilderAddress(address.kind, address.url, tls)


def dial(url: str, *, timeout: float = _CONNECT_TIMEOUT, tls: TLSOptions | None = None) -> socket.socket:
    """A connected stream socket to ``unix://PATH`` or ``tcp://HOST:PORT`` (TLS when given)."""
    parts = urlsplit(url)
    sock: socket.socket
    try:
        if parts.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(parts.path)
        elif parts.scheme == "tcp" and parts.hostname and parts.port:
            sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = _wrap_tls(sock, tls, hostname=parts.hostname)
        else:
            raise PkgtoolError(f"cannot reach BuildKit at {url}: unsupported address")
    except ssl.SSLError as exc:
        raise PkgtoolError(f"cannot reach BuildKit at {url}: {tls_failure(exc, tls)}") from None
    except OSError as exc:
        raise PkgtoolError(f"cannot reach BuildKit at {url}: {exc.strerror or exc}") from exc
    sock.settimeout(None)
    return sock


def tls_failure(exc: ssl.SSLError, tls: TLSOptions | None) -> str:
    """A TLS handshake failure in words, with the options that were used (never file contents)."""
    used = f" (using {tls.describe()})" if tls is not None else ""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}{used}"
    return f"TLS: {exc.reason or exc}{used}"


def _wrap_tls(sock: socket.socket, tls: TLSOptions, *, hostname: str) -> socket.socket:
    try:
        return ssl_context(tls).wrap_socket(sock, server_hostname=tls.server_name or hostname)
    except BaseException:
        sock.close()
        raise


def hijack(docker_host: str, path: str, headers: Mapping[str, str | list[str]] | None = None,
           *, tls: TLSOptions | None = None) -> tuple[socket.socket, bytes]:
    """``POST /vX/<path>`` upgraded to h2c on the Docker socket.

    Returns the socket and any bytes that arrived after the 101 response head (they already
    belong to the HTTP/2 stream and must be forwarded).
    """
    sock = dial(docker_host, tls=tls)
    lines = [
        f"POST /{DOCKER_API_VERSION}{path} HTTP/1.1",
        "Host: docker",
        "Connection: Upgrade",
        "Upgrade: h2c",
        "Content-Length: 0",
    ]
    for name, value in (headers or {}).items():
        for item in [value] if isinstance(value, str) else value:
            if "\r" in item or "\n" in item:
                raise ValueError(f"invalid header value for {name}")
            lines.append(f"{name}: {item}")
    try:
        sock.settimeout(_CONNECT_TIMEOUT)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > _MAX_RESPONSE_HEAD:
                break
        sock.settimeout(None)
    except OSError as exc:
        sock.close()
        raise PkgtoolError(f"cannot reach BuildKit at dockerd {docker_host}: {exc}") from exc
    head, sep, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if not sep or " 101 " not in f"{status} ":
        sock.close()
        body = rest[:300].decode(errors="replace").strip()
        raise PkgtoolError(
            f"cannot reach BuildKit at dockerd {docker_host}: {path} answered {status or 'nothing'!r} {body}".rstrip()
        )
    return sock, rest


def splice(a: socket.socket, b: socket.socket, *, a_pending: bytes = b"") -> threading.Thread:
    """Copy bytes both ways between two sockets until both sides close.

    ``a_pending`` are bytes already read from ``a`` that must reach ``b`` first.  Returns
    the thread that closes both sockets when done.
    """

    def copy(src: socket.socket, dst: socket.socket, pending: bytes) -> None:
        try:
            if pending:
                dst.sendall(pending)
            while data := src.recv(256 * 1024):
                dst.sendall(data)
        except OSError:
            pass
        # Half-close so the other direction can finish; a reset peer is already gone.  On a
        # TLS socket, SSLSocket.shutdown would drop the TLS state the other direction still
        # reads with, so the TCP connection is half-closed underneath it.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(dst, socket.SHUT_WR)

    forward = threading.Thread(target=copy, args=(a, b, a_pending), name="splice", daemon=True)
    forward.start()

    def backward_then_close() -> None:
        copy(b, a, b"")
        forward.join()
        a.close()
        b.close()

    closer = threading.Thread(target=backward_then_close, name="splice", daemon=True)
    closer.start()
    return closer


class PrivateDir:
    """A 0700 temp directory for our unix sockets, removed on close."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class Relay:
    """A unix socket whose every connection is spliced onto a new ``/grpc`` hijack."""

    def __init__(self, docker_host: str, *, tls: TLSOptions | None = None) -> None:
        self.docker_host = docker_host
        self.tls = tls
        self._dir = PrivateDir("pkgtool-bk-")
        self.path = self._dir.path / "relay.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.path))
        self._listener.listen(16)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="buildkit-relay", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"unix://{self.path}"

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream, pending = hijack(self.docker_host, "/grpc", tls=self.tls)
        except PkgtoolError:
            # grpcio sees the closed connection as UNAVAILABLE; connect() probes the hijack
            # itself first to give the user the real reason.
            client.close()
            return
        splice(upstream, client, a_pending=pending)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._dir.close()


@dataclass
class Connection:
    """An open gRPC channel to BuildKit's Control API."""

    address: BuilderAddress
    channel: Any  # grpc.Channel
    relay: Relay | None = None

    def close(self) -> None:
        self.channel.close()
        if self.relay is not None:
            self.relay.close()


def connect(address: BuilderAddress) -> Connection:
    """Open the Control channel; raises PkgtoolError when the daemon cannot be reached."""
    import grpc

    if address.kind == "dockerd":
        # Probe once so an unreachable daemon or a missing /grpc route is a clear error
        # rather than a grpc UNAVAILABLE later.
        probe, _ = hijack(address.url, "/grpc", tls=address.tls)
        probe.close()
        # The relay speaks plain h2c to grpcio over a private unix socket; TLS is only on
        # the hop to dockerd.
        relay = Relay(address.url, tls=address.tls)
        channel = grpc.insecure_channel(relay.target, options=GRPC_OPTIONS)
        return Connection(address, channel, relay)
    dial(address.url).close()
    target = address.url if address.url.startswith("unix://") else address.url[len("tcp://"):]
    if address.tls is not None:
        credentials = grpc_credentials(address.tls)
        options = GRPC_OPTIONS + grpc_channel_options(address.tls)
        return Connection(address, grpc.secure_channel(target, credentials, options=options))
    return Connection(address, grpc.insecure_channel(target, options=GRPC_OPTIONS))


def docker_client(address: BuilderAddress, *, timeout: float) -> Any:
    """A Docker SDK client for a ``dockerd`` builder (image save after a moby export)."""
    import docker
    import docker.tls

    tls: Any = False
    if address.tls is not None:
        tls = docker.tls.TLSConfig(
            client_cert=(str(address.tls.cert), str(address.tls.key)) if address.tls.cert and address.tls.key else None,
            ca_cert=str(address.tls.ca_cert) if address.tls.ca_cert else None,
            verify=str(address.tls.ca_cert) if address.tls.ca_cert else True,
        )
    # The API version is fixed (as for /grpc and /session) so that creating the client does
    # not already make a request: requests would verify it against $REQUESTS_CA_BUNDLE,
    # which it lets override the client's own CA; trust_env=False stops that below.
    client = docker.DockerClient(base_url=address.url, timeout=timeout, tls=tls,
                                 version=DOCKER_API_VERSION.removeprefix("v"))
    if address.tls is not None:
        client.api.trust_env = False
    return client
