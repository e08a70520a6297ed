"""A fault-injecting HTTP proxy in front of the stack's real registry.

Every request pkgtool sends (``User-Agent: pkgtool``; BuildKit's own pulls pass untouched,
since the subject here is pkgtool's resilience) independently draws one fate from a seeded
random generator:

* ``reset``: the connection is dropped before any answer;
* ``503``: an immediate ``503 Service Unavailable``;
* ``truncate``: the real answer, with its body cut off halfway;
* ``corrupt``: the real answer, with one byte of its body flipped;
* otherwise the real answer, unchanged.

Upload locations the registry hands out are rewritten to point back at the proxy, so
every request of a push goes through it too.
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_CHUNK = 256 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authenticate", "proxy-authorization"}


@dataclass
class Rates:
    reset: float = 0.10
    unavailable: float = 0.10
    truncate: float = 0.05
    corrupt: float = 0.05


@dataclass
class Proxy:
    upstream: str  # host:port
    rates: Rates
    rng: random.Random
    address: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fate(self, user_agent: str) -> str:
        if not user_agent.startswith("pkgtool"):
            return "pass"
        with self.lock:
            roll = self.rng.random()
            r = self.rates
            fate = ("reset" if roll < r.reset else "503" if roll < r.reset + r.unavailable
                    else "truncate" if roll < r.reset + r.unavailable + r.truncate
                    else "corrupt" if roll < r.reset + r.unavailable + r.truncate + r.corrupt else "pass")
            self.counts[fate] = self.counts.get(fate, 0) + 1
            return fate


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: Proxy

    def log_message(self, *_args: object) -> None:
        pass

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        fate = self.proxy.fate(self.headers.get("User-Agent", ""))
        if fate == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fate == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        host, port = self.proxy.upstream.rsplit(":", 1)
        upstream = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
            headers["Host"] = self.proxy.upstream
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            self.send_response(answer.status, answer.reason)
            size = answer.getheader("Content-Length")
            for key, value in answer.getheaders():
                if key.lower() in _HOP_BY_HOP:
                    continue
                if key.lower() == "location":
                    value = value.replace(f"://{self.proxy.upstream}", f"://{self.proxy.address}")
                self.send_header(key, value)
            if size is None:
                self.send_header("Content-Length", "0")
            self.end_headers()
            if self.command == "HEAD" or not size or size == "0":
                answer.read()
                return
            total, sent, flipped = int(size), 0, False
            while chunk := answer.read(_CHUNK):
                if fate == "truncate" and sent + len(chunk) > total // 2:
                    self.wfile.write(chunk[: total // 2 - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fate == "corrupt" and not flipped:
                    chunk, flipped = bytes([chunk[0] ^ 0x20]) + chunk[1:], True
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            upstream.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _relay


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # dropped connections are the point


@contextmanager
def running(upstream: str, *, seed: int, rates: Rates | None = None) -> Iterator[Proxy]:
    """A proxy on a loopback port in front of ``upstream`` (``host:port``)."""
    proxy = Proxy(upstream=upstream, rates=rates or Rates(), rng=random.Random(seed))
    handler = type("Handler", (_Handler,), {"proxy": proxy})
    server = _Server(("127.0.0.1", 0), handler)
    proxy.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
