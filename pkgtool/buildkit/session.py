"""The client session BuildKit calls back into during a solve.

BuildKit pulls the build context from the client, pushes exporter output to it, and asks it
for registry credentials, all as gRPC calls *from the daemon to us*.  We run a grpcio server
on a private unix socket and connect the daemon to it:

* dockerd: ``POST /session`` upgraded to h2c, announcing the session id, name, shared key
  and one ``X-Docker-Expose-Session-Grpc-Method`` per method we serve; after the 101 dockerd
  is the gRPC client, so the hijacked socket is spliced onto our server's socket;
* buildkitd: the ``Control.Session`` bidi stream, whose BytesMessage frames carry the same
  HTTP/2 bytes, pumped to and from our server's socket.

Health is mandatory: dockerd checks it every second and drops the session on the first
failure.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from pkgtool.buildkit._gen import auth_pb2, control_pb2, filesync_pb2, health_pb2, wire_pb2
from pkgtool.buildkit.connect import GRPC_OPTIONS, PrivateDir, hijack, splice
from pkgtool.buildkit.filesync import (
    DiffCopyReceiver,
    DiffCopySender,
    SendStats,
    WalkEntry,
    receive_bytes,
)
from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import object_or_none

if TYPE_CHECKING:
    from pkgtool.buildkit.tls import TLSOptions

log = logging.getLogger(__name__)

M_FILESYNC = "/moby.filesync.v1.FileSync/DiffCopy"
M_FILESEND = "/moby.filesync.v1.FileSend/DiffCopy"
M_CREDENTIALS = "/moby.filesync.v1.Auth/Credentials"
M_HEALTH = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True)
class ExportTarget:
    """Where FileSend output goes: ``kind`` is ``tar`` (a file) or ``local`` (a directory)."""

    kind: str
    dest: Path


def shared_key(context: Path) -> str:
    """A stable key per context dir, so BuildKit reuses what it received last time."""
    return hashlib.sha256(f"pkgtool:{context.resolve()}".encode()).hexdigest()


def transfer_options(metadata: Iterable[tuple[str, Any]]) -> dict[str, list[str]]:
    """gRPC metadata -> option lists, decoding BuildKit's ``<key>-encoded`` URL escaping."""
    opts: dict[str, list[str]] = {}
    for key, value in metadata:
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        opts.setdefault(key.lower(), []).append(value)
    for key, values in list(opts.items()):
        flag = opts.get(f"{key}-encoded", [""])[0].lower()
        if flag in ("1", "true"):
            opts[key] = [unquote(v) for v in values]
    return opts


def walk_dir(root: Path, *, excludes: Sequence[str], includes: Sequence[str], followpaths: Sequence[str]) -> Iterator[WalkEntry]:
    """The entries of one local dir in fsutil order, filtered the way BuildKit asked
    (.dockerignore patterns arrive as ``exclude-patterns``)."""
    from pkgtool.fswalk import walk

    return walk(root, excludes=list(excludes), includes=list(includes), followpaths=list(followpaths))


def docker_credentials(host: str, *, config_dir: Path | None = None) -> tuple[str, str]:
    """(username, secret) for a registry host from the docker config; ("", "") = anonymous.

    Handles inline ``auths`` entries (``auth`` or username/password, ``identitytoken``) and
    credential helpers (``credHelpers``/``credsStore``).  An identity token is returned with
    an empty username, which is how BuildKit expects it.
    """
    directory = config_dir or Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = object_or_none((directory / "config.json").read_bytes())
    except OSError:
        return "", ""
    if config is None:
        return "", ""
    key = "https://index.docker.io/v1/" if host in ("registry-1.docker.io", "docker.io") else host
    helper = (config.get("credHelpers") or {}).get(key) or config.get("credsStore")
    if isinstance(helper, str) and helper:
        try:
            out = subprocess.run(
                [f"docker-credential-{helper}", "get"], input=key.encode(), capture_output=True,
                timeout=30, check=True,
            ).stdout
            data = json.loads(out)
            user, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
            return ("" if user == "<token>" else user), secret
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    auths = config.get("auths") or {}
    entry = next(
        (v for k, v in auths.items() if k == key or k.removeprefix("https://").removeprefix("http://").split("/")[0] == key),
        None,
    )
    if not isinstance(entry, dict):
        return "", ""
    if entry.get("identitytoken"):
        return "", str(entry["identitytoken"])
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", ""
        return user, password
    return str(entry.get("username", "")), str(entry.get("password", ""))


@dataclass
class Session:
    """One BuildKit session serving local dirs (by name), an export target and credentials.

    Use as a context manager; attach it to the daemon with :meth:`attach_dockerd` or
    :meth:`attach_control` before starting the solve that names :attr:`id`.
    """

    dirs: Mapping[str, Path]
    name: str
    key: str
    export: ExportTarget | None = None
    id: str = field(default_factory=lambda: secrets.token_hex(13))
    transfers: dict[str, SendStats] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._dir: PrivateDir | None = None
        self._server: Any = None
        self._sockets: list[socket.socket] = []
        self._calls: list[Any] = []
        self._lock = threading.Lock()

    @property
    def methods(self) -> list[str]:
        methods = [M_HEALTH, M_FILESYNC, M_CREDENTIALS]
        if self.export is not None:
            methods.append(M_FILESEND)
        return methods

    @property
    def headers(self) -> dict[str, str | list[str]]:
        return {
            "X-Docker-Expose-Session-Uuid": self.id,
            "X-Docker-Expose-Session-Name": self.name,
            "X-Docker-Expose-Session-Sharedkey": self.key,
            "X-Docker-Expose-Session-Grpc-Method": self.methods,
        }

    def __enter__(self) -> Session:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        import grpc

        self._dir = PrivateDir("pkgtool-session-")
        self._socket_path = self._dir.path / "session.sock"
        handlers = {
            "grpc.health.v1.Health": {
                "Check": grpc.unary_unary_rpc_method_handler(
                    self._health,
                    request_deserializer=health_pb2.HealthCheckRequest.FromString,
                    response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
                ),
            },
            "moby.filesync.v1.FileSync": {
                "DiffCopy": grpc.stream_stream_rpc_method_handler(
                    self._diff_copy,
                    request_deserializer=wire_pb2.Packet.FromString,
                    response_serializer=wire_pb2.Packet.SerializeToString,
                ),
            },
            # Raw bytes: `tar` sends BytesMessage, `local` sends fsutil Packets.
            "moby.filesync.v1.FileSend": {
                "DiffCopy": grpc.stream_stream_rpc_method_handler(self._file_send),
            },
            "moby.filesync.v1.Auth": {
                "Credentials": grpc.unary_unary_rpc_method_handler(
                    self._credentials,
                    request_deserializer=auth_pb2.CredentialsRequest.FromString,
                    response_serializer=auth_pb2.CredentialsResponse.SerializeToString,
                ),
            },
        }
        server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix="bk-session"), options=GRPC_OPTIONS)
        for service, methods in handlers.items():
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, methods),))
        server.add_insecure_port(f"unix://{self._socket_path}")
        server.start()
        self._server = server

    def _local_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self._socket_path))
        self._sockets.append(sock)
        return sock

    def attach_dockerd(self, docker_host: str, *, tls: TLSOptions | None = None) -> None:
        """Open ``/session`` on dockerd and splice it onto our server."""
        remote, pending = hijack(docker_host, "/session", self.headers, tls=tls)
        self._sockets.append(remote)
        splice(remote, self._local_socket(), a_pending=pending)

    def attach_control(self, stub: Any) -> None:
        """Run the session over ``Control.Session`` (standalone buildkitd)."""
        local = self._local_socket()

        def outgoing() -> Iterator[control_pb2.BytesMessage]:
            with contextlib.suppress(OSError):
                while data := local.recv(256 * 1024):
                    yield control_pb2.BytesMessage(data=data)

        metadata = [
            (name.lower(), value)
            for name, values in self.headers.items()
            for value in ([values] if isinstance(values, str) else values)
        ]
        call = stub.Session(outgoing(), metadata=metadata)
        self._calls.append(call)

        def incoming() -> None:
            try:
                for msg in call:
                    local.sendall(msg.data)
            except Exception as exc:  # the stream ends with CANCELLED when we close
                log.debug("control session ended: %s", exc)
            with contextlib.suppress(OSError):
                local.shutdown(socket.SHUT_WR)

        threading.Thread(target=incoming, name="bk-session-pump", daemon=True).start()

    def close(self) -> None:
        for call in self._calls:
            call.cancel()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        if self._dir is not None:
            self._dir.close()
            self._dir = None

    # --- services -------------------------------------------------------------------------

    def _health(self, request: Any, context: Any) -> Any:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    def _credentials(self, request: Any, context: Any) -> Any:
        user, secret = docker_credentials(request.Host)
        return auth_pb2.CredentialsResponse(Username=user, Secret=secret)

    def _fail(self, context: Any, message: str) -> None:
        import grpc

        with self._lock:
            self.errors.append(message)
        context.abort(grpc.StatusCode.INTERNAL, message)

    def _diff_copy(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        import grpc

        opts = transfer_options(context.invocation_metadata())
        name = (opts.get("dir-name") or [""])[0]
        root = self.dirs.get(name)
        if root is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no access allowed to dir {name!r}")
        assert root is not None
        try:
            entries = walk_dir(
                root,
                excludes=opts.get("exclude-patterns", []),
                includes=opts.get("include-patterns", []),
                followpaths=opts.get("followpaths", []),
            )
            sender = DiffCopySender(root, entries)
            with self._lock:
                self.transfers[name] = sender.stats
            yield from sender.run(request_iterator)
        except (PkgtoolError, OSError) as exc:
            self._fail(context, f"sending {name} from {root}: {exc}")

    def _file_send(self, request_iterator: Iterator[bytes], context: Any) -> Iterator[bytes]:
        import grpc

        export = self.export
        if export is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "this session takes no export")
        assert export is not None
        try:
            if export.kind == "tar":
                chunks = (filesync_pb2.BytesMessage.FromString(raw).data for raw in request_iterator)
                receive_bytes(chunks, export.dest)
                return
            packets = (wire_pb2.Packet.FromString(raw) for raw in request_iterator)
            for pkt in DiffCopyReceiver(export.dest).run(packets):
                yield pkt.SerializeToString()
        except (PkgtoolError, OSError) as exc:
            self._fail(context, f"receiving the {export.kind} export into {export.dest}: {exc}")
