"""A small in-process distribution API server for fast unit tests (a fake: the real
Distribution registry of the local stack is what the integration tests use).

It speaks enough of the OCI distribution spec for pkgtool's client: manifests by tag and
digest (GET, HEAD, PUT, DELETE), blobs (GET with ``Range``, HEAD), monolithic and chunked
uploads with the digest checked, cross-repository mounts, tag lists, and no referrers API
(404, as Distribution 2.8 answers).  ``fault`` lets a test break chosen requests: reset the
connection, answer 503, cut a body short or flip a byte of it.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|tags)/(?P<rest>.*)$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+?)/blobs/uploads/(?P<id>[^/]*)$")

# fault(method, path, attempt) -> None, or one of "reset", "503", "truncate", "corrupt"
Fault = Callable[[str, str, int], str | None]


@dataclass
class Store:
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # digest -> (bytes, type)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, tag) -> digest
    uploads: dict[str, bytearray] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)  # Range headers of blob GETs, in order
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    honour_range: bool = True
    fault: Fault | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: Store

    def log_message(self, *_args: object) -> None:
        pass

    # -- plumbing

    def _fault(self) -> str | None:
        path = urlsplit(self.path).path
        with self.store.lock:
            key = (self.command, path)
            n = self.store.counts.get(key, 0)
            self.store.counts[key] = n + 1
            self.store.seen.append(key)
        action = self.store.fault(self.command, path, n) if self.store.fault else None
        if action == "reset":
            # Drop the connection without an answer (linger 0: the final close sends a RST).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return "done"
        if action == "503":
            self._send(503, b"busy", headers={"Retry-After": "0"})
            return "done"
        return action

    def _send(self, status: int, body: bytes = b"", *, headers: dict[str, str] | None = None,
              head: bool = False, damage: str | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head or not body:
            return
        if damage == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if damage == "corrupt":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _error(self, status: int, code: str) -> None:
        self._send(status, json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode(),
                   headers={"Content-Type": "application/json"})

    # -- verbs

    def do_GET(self) -> None:
        self._read(head=False)

    def do_HEAD(self) -> None:
        self._read(head=True)

    def _read(self, *, head: bool) -> None:
        damage = self._fault()
        if damage == "done":
            return
        path = urlsplit(self.path).path
        if path == "/v2/":
            self._send(200, b"{}")
            return
        match = _ROUTE.match(path)
        if not match:
            self._error(404, "NOT_FOUND")
            return
        name, kind, rest = match["name"], match["kind"], match["rest"]
        if kind == "tags" and rest == "list":
            tags = sorted(tag for (repo, tag) in self.store.tags if repo == name)
            self._send(200, json.dumps({"name": name, "tags": tags}).encode(),
                       headers={"Content-Type": "application/json"}, head=head, damage=damage)
        elif kind == "manifests":
            digest = rest if rest.startswith("sha256:") else self.store.tags.get((name, rest))
            found = self.store.manifests.get(digest or "")
            if found is None:
                self._error(404, "MANIFEST_UNKNOWN")
                return
            data, media_type = found
            self._send(200, data, headers={"Content-Type": media_type, "Docker-Content-Digest": _digest(data)},
                       head=head, damage=damage)
        elif kind == "blobs":
            data = self.store.blobs.get(rest)
            if data is None:
                self._error(404, "BLOB_UNKNOWN")
                return
            self.store.ranges.append(self.headers.get("Range", ""))
            wanted = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
            if wanted and self.store.honour_range:
                start = int(wanted[1])
                part = data[start:]
                self._send(206, part, head=head, damage=damage, headers={
                    "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}", "Docker-Content-Digest": rest})
                return
            self._send(200, data, headers={"Docker-Content-Digest": rest}, head=head, damage=damage)
        else:
            self._error(404, "NOT_FOUND")

    def do_PUT(self) -> None:
        body = self._body()
        if self._fault() == "done":
            return
        split = urlsplit(self.path)
        upload = _UPLOAD.match(split.path)
        if upload:
            digest = parse_qs(split.query).get("digest", [""])[0]
            with self.store.lock:
                data = bytes(self.store.uploads.pop(upload["id"], bytearray())) + body
            if _digest(data) != digest:
                self._error(400, "DIGEST_INVALID")
                return
            self.store.blobs[digest] = data
            self._send(201, headers={"Docker-Content-Digest": digest, "Location": f"/v2/{upload['name']}/blobs/{digest}"})
            return
        match = _ROUTE.match(split.path)
        if not match or match["kind"] != "manifests":
            self._error(404, "NOT_FOUND")
            return
        digest = _digest(body)
        reference = match["rest"]
        if reference.startswith("sha256:") and reference != digest:
            self._error(400, "DIGEST_INVALID")
            return
        media_type = self.headers.get("Content-Type", "")
        with self.store.lock:
            self.store.manifests[digest] = (body, media_type)
            if not reference.startswith("sha256:"):
                self.store.tags[(match["name"], reference)] = digest
        self._send(201, headers={"Docker-Content-Digest": digest})

    def do_POST(self) -> None:
        self._body()
        if self._fault() == "done":
            return
        split = urlsplit(self.path)
        upload = _UPLOAD.match(split.path)
        if not upload:
            self._error(404, "NOT_FOUND")
            return
        query = parse_qs(split.query)
        mount = query.get("mount", [""])[0]
        if mount and mount in self.store.blobs:
            self._send(201, headers={"Location": f"/v2/{upload['name']}/blobs/{mount}", "Docker-Content-Digest": mount})
            return
        session = uuid.uuid4().hex
        with self.store.lock:
            self.store.uploads[session] = bytearray()
        self._send(202, headers={"Location": f"/v2/{upload['name']}/blobs/uploads/{session}", "Range": "0-0"})

    def do_PATCH(self) -> None:
        body = self._body()
        if self._fault() == "done":
            return
        upload = _UPLOAD.match(urlsplit(self.path).path)
        if not upload or upload["id"] not in self.store.uploads:
            self._error(404, "BLOB_UPLOAD_UNKNOWN")
            return
        with self.store.lock:
            buffer = self.store.uploads[upload["id"]]
            buffer += body
            end = len(buffer) - 1
        self._send(202, headers={"Location": self.path.split("?")[0], "Range": f"0-{end}"})

    def do_DELETE(self) -> None:
        if self._fault() == "done":
            return
        match = _ROUTE.match(urlsplit(self.path).path)
        if match and match["kind"] == "manifests" and match["rest"] in self.store.manifests:
            with self.store.lock:
                del self.store.manifests[match["rest"]]
                for key in [k for k, v in self.store.tags.items() if v == match["rest"]]:
                    del self.store.tags[key]
            self._send(202)
            return
        self._send(202 if _UPLOAD.match(urlsplit(self.path).path) else 404)


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up (and injected resets) are expected here


@contextmanager
def running() -> Iterator[tuple[str, Store]]:
    """A fake registry on a loopback port: yields (``127.0.0.1:PORT``, its store)."""
    store = Store()
    handler = type("Handler", (_Handler,), {"store": store})
    server = _Server(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", store
    finally:
        server.shutdown()
        server.server_close()
