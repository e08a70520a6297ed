"""Dockerfile builds through BuildKit's Control API.

One :class:`Builder` holds one Control channel; each :meth:`Builder.solve_dockerfile` runs
one Solve for one platform with its own session (context, Dockerfile dir, export target),
so solves for several arches can run concurrently from several threads.  Each session uses
the same shared key for the same context dir, so BuildKit reuses earlier transfers.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pkgtool.buildkit._gen import control_pb2
from pkgtool.buildkit.connect import BuilderAddress, Connection, connect, resolve_address
from pkgtool.buildkit.session import ExportTarget, Session, shared_key
from pkgtool.buildkit.status import StatusCallback, StatusTracker
from pkgtool.buildkit.stubs import service_stub
from pkgtool.buildkit.tls import TLSOptions
from pkgtool.errors import PkgtoolError

NETWORK_MODES = ("none", "sandbox", "host")
SESSION_TRANSPORTS = ("auto", "http", "control")
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class MobyExport:
    """Into dockerd's image store as ``name`` (dockerd only; one platform per solve)."""

    name: str


@dataclass(frozen=True)
class TarExport:
    """The result's root filesystem as one tar file at ``dest``."""

    dest: Path


@dataclass(frozen=True)
class OCIExport:
    """The result as an OCI image-layout tar at ``dest`` (standalone buildkitd only:
    dockerd 20.10 has no ``oci`` exporter)."""

    dest: Path


@dataclass(frozen=True)
class LocalExport:
    """The result's root filesystem written into the directory ``dest``."""

    dest: Path


Export = MobyExport | TarExport | OCIExport | LocalExport


@dataclass(frozen=True)
class CacheEntry:
    """One cache import or export for a solve: BuildKit's ``type`` (``registry``,
    ``inline``, ...) and its attributes (``ref=HOST/REPO:TAG``, ``mode=min|max``)."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Worker:
    id: str
    platforms: list[str]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SolveResult:
    exporter_response: dict[str, str]
    # Bytes of context and Dockerfile data BuildKit asked for (0 when it reused all of it).
    bytes_sent: int = 0


class BuildError(PkgtoolError):
    """A build step failed; carries the step, the platform and its last output lines."""

    def __init__(self, message: str, *, step: str, platform: str, log_tail: list[str]) -> None:
        super().__init__(message)
        self.step = step
        self.platform = platform
        self.log_tail = log_tail


class BuildCancelled(PkgtoolError):
    """The solve was cancelled by the user."""

    exit_code = 130


def platform_string(p: Any) -> str:
    parts = [p.OS or "linux", p.Architecture]
    if p.Variant:
        parts.append(p.Variant)
    return "/".join(parts)


def frontend_attrs(
    *, dockerfile_name: str, platform: str, build_args: Mapping[str, str], labels: Mapping[str, str],
    network: str | None, no_cache: bool, target: str | None = None,
) -> dict[str, str]:
    """The dockerfile.v0 frontend options for one solve."""
    attrs = {"filename": dockerfile_name, "platform": platform}
    for key, value in build_args.items():
        attrs[f"build-arg:{key}"] = value
    for key, value in labels.items():
        attrs[f"label:{key}"] = value
    if network is not None:
        if network not in NETWORK_MODES:
            raise PkgtoolError(f"unknown network mode {network!r} (use one of {', '.join(NETWORK_MODES)})")
        attrs["force-network-mode"] = network
    if no_cache:
        attrs["no-cache"] = ""
    if target:
        attrs["target"] = target
    return attrs


def set_cache_options(req: Any, *, imports: Sequence[CacheEntry], exports: Sequence[CacheEntry]) -> None:
    """Fill ``SolveRequest.Cache``; the frontend learns of the imports from its
    ``cache-imports`` attribute (a JSON list), as buildctl passes them."""
    for entry in imports:
        req.Cache.Imports.add(Type=entry.type, Attrs=dict(entry.attrs))
    for entry in exports:
        req.Cache.Exports.add(Type=entry.type, Attrs=dict(entry.attrs))
    if imports:
        req.FrontendAttrs["cache-imports"] = json.dumps(
            [{"Type": e.type, "Attrs": dict(e.attrs)} for e in imports], sort_keys=True)


def _rpc_message(exc: Any) -> str:
    details = exc.details() if hasattr(exc, "details") else None
    return str(details or exc).strip()


class Builder:
    """A connection to BuildKit.  Use :func:`open_builder`."""

    def __init__(self, conn: Connection, *, session_transport: str = "auto") -> None:
        if session_transport not in SESSION_TRANSPORTS:
            raise ValueError(session_transport)
        self.conn = conn
        self.address: BuilderAddress = conn.address
        # dockerd serves sessions both on /session and over Control.Session; buildkitd only
        # over Control.Session.  "auto" picks /session for dockerd (what docker itself uses).
        if session_transport == "auto":
            session_transport = "http" if self.address.kind == "dockerd" else "control"
        if session_transport == "http" and self.address.kind != "dockerd":
            raise PkgtoolError("a /session HTTP session needs the Docker daemon's BuildKit")
        self.session_transport = session_transport
        self.stub: Any = service_stub(conn.channel, control_pb2, "Control")

    def __enter__(self) -> Builder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def workers(self) -> list[Worker]:
        import grpc

        try:
            resp = self.stub.ListWorkers(control_pb2.ListWorkersRequest(), timeout=30)
        except grpc.RpcError as exc:
            raise PkgtoolError(f"cannot reach BuildKit at {self.address}: {_rpc_message(exc)}") from exc
        return [
            Worker(id=w.ID, platforms=[platform_string(p) for p in w.platforms], labels=dict(w.Labels))
            for w in resp.record
        ]

    def platforms(self) -> list[str]:
        """Every platform some worker can build for, in the daemon's order."""
        seen: dict[str, None] = {}
        for worker in self.workers():
            for p in worker.platforms:
                seen.setdefault(p, None)
        return list(seen)

    def solve_dockerfile(
        self,
        *,
        context: Path,
        dockerfile: Path,
        platform: str,
        export: Export,
        build_args: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        network: str | None = None,
        no_cache: bool = False,
        target: str | None = None,
        cache_imports: Sequence[CacheEntry] = (),
        cache_exports: Sequence[CacheEntry] = (),
        on_status: StatusCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> SolveResult:
        """Build ``dockerfile`` with ``context`` for one ``platform`` and export the result.

        ``cache_imports`` and ``cache_exports`` go into the request's cache options; the
        imports are also handed to the Dockerfile frontend (``cache-imports``), which is
        what makes its own solves consult them.
        """
        import grpc

        if not dockerfile.is_file():
            raise PkgtoolError(f"Dockerfile {dockerfile} does not exist")
        if not context.is_dir():
            raise PkgtoolError(f"build context {context} is not a directory")
        req = control_pb2.SolveRequest(
            Ref=secrets.token_hex(13),
            Frontend="dockerfile.v0",
            FrontendAttrs=frontend_attrs(
                dockerfile_name=dockerfile.name, platform=platform, build_args=build_args or {},
                labels=labels or {}, network=network, no_cache=no_cache, target=target,
            ),
        )
        set_cache_options(req, imports=cache_imports, exports=cache_exports)
        target_export: ExportTarget | None = None
        if isinstance(export, MobyExport):
            if self.address.kind != "dockerd":
                raise PkgtoolError("the moby exporter needs the Docker daemon's BuildKit")
            req.Exporter = "moby"
            req.ExporterAttrs["name"] = export.name
        elif isinstance(export, TarExport):
            req.Exporter = "tar"
            target_export = ExportTarget("tar", export.dest)
        elif isinstance(export, OCIExport):
            if self.address.kind == "dockerd":
                raise PkgtoolError("dockerd's BuildKit has no oci exporter; use the moby exporter")
            # Streams like `tar`: FileSend BytesMessage chunks of one tar file.
            req.Exporter = "oci"
            target_export = ExportTarget("tar", export.dest)
        else:
            if export.dest.exists() and any(export.dest.iterdir()):
                raise PkgtoolError(f"export directory {export.dest} is not empty")
            req.Exporter = "local"
            target_export = ExportTarget("local", export.dest)

        dirs = {"context": context, "dockerfile": dockerfile.parent}
        with Session(dirs=dirs, name=context.name or "context", key=shared_key(context), export=target_export) as session:
            if self.session_transport == "http":
                session.attach_dockerd(self.address.url, tls=self.address.tls)
            else:
                session.attach_control(self.stub)
            req.Session = session.id
            tracker = StatusTracker()
            callback_errors: list[BaseException] = []
            future = self.stub.Solve.future(req)
            status_thread = threading.Thread(
                target=self._stream_status, args=(req.Ref, tracker, on_status, callback_errors),
                name="bk-status", daemon=True,
            )
            status_thread.start()
            try:
                while not future.done():
                    if (cancel is not None and cancel.is_set()) or callback_errors:
                        future.cancel()
                        break
                    threading.Event().wait(_POLL_SECONDS)
            except BaseException:
                # KeyboardInterrupt: cancelling the call makes BuildKit stop the build.
                future.cancel()
                raise
            if callback_errors:
                raise callback_errors[0]
            try:
                resp = future.result()
            except grpc.FutureCancelledError as exc:
                raise BuildCancelled(f"build for {platform} cancelled") from exc
            except grpc.RpcError as exc:
                status_thread.join(timeout=5)
                if exc.code() == grpc.StatusCode.CANCELLED:
                    raise BuildCancelled(f"build for {platform} cancelled") from exc
                raise self._build_error(exc, platform=platform, tracker=tracker, session=session) from exc
            status_thread.join(timeout=5)
            if callback_errors:
                raise callback_errors[0]
            sent = sum(s.bytes_sent for s in session.transfers.values())
            return SolveResult(exporter_response=dict(resp.ExporterResponse), bytes_sent=sent)

    def _stream_status(
        self, ref: str, tracker: StatusTracker, on_status: StatusCallback | None, errors: list[BaseException],
    ) -> None:
        import grpc

        try:
            for resp in self.stub.Status(control_pb2.StatusRequest(Ref=ref)):
                for event in tracker.feed(resp):
                    if on_status is not None:
                        on_status(event)
        except grpc.RpcError:
            # The stream ends with an error when the solve fails or is cancelled; the Solve
            # call reports that.
            return
        except Exception as exc:
            # A failing callback (a progress display bug) stops the build rather than
            # hiding the failure on a background thread.
            errors.append(exc)

    def _build_error(self, exc: Any, *, platform: str, tracker: StatusTracker, session: Session) -> BuildError:
        message = _rpc_message(exc)
        if session.errors:
            message = f"{message} ({session.errors[0]})"
        failed = tracker.failed()
        if failed is None:
            return BuildError(f"build for {platform} failed on {self.address}: {message}", step="", platform=platform,
                              log_tail=[])
        step, _error, tail = failed
        text = f"build for {platform} failed on {self.address} at step {step!r}: {message}"
        if tail:
            text += "; last output: " + " | ".join(line for line in tail[-5:] if line.strip())
        return BuildError(text, step=step, platform=platform, log_tail=tail)


def open_builder(address: str | BuilderAddress | None = None, *, session_transport: str = "auto",
                 tls: TLSOptions | None = None) -> Builder:
    """Connect to BuildKit (``--builder`` value, else ``$BUILDKIT_HOST``, else dockerd).

    ``session_transport``: ``auto``, ``http`` (dockerd's ``/session``) or ``control``
    (the ``Control.Session`` stream; the only one a standalone buildkitd has).  ``tls``
    applies to a ``tcp://`` address given as a string.
    """
    resolved = address if isinstance(address, BuilderAddress) else resolve_address(address, tls=tls)
    conn = connect(resolved)
    try:
        return Builder(conn, session_transport=session_transport)
    except BaseException:
        conn.close()
        raise
