"""Builder addresses, the h2c hijack, splicing, solve options and the committed stubs."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgtool.buildkit.connect import BuilderAddress, dial, hijack, resolve_address, splice
from pkgtool.buildkit.solve import frontend_attrs
from pkgtool.errors import PkgtoolError

REPO = Path(__file__).resolve().parents[2]


def test_resolve_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///x/docker.sock")
    assert resolve_address(None) == BuilderAddress("dockerd", "unix:///x/docker.sock")
    assert resolve_address("docker") == BuilderAddress("dockerd", "unix:///x/docker.sock")
    assert resolve_address("docker://tcp://h:2375") == BuilderAddress("dockerd", "tcp://h:2375")
    assert resolve_address("unix:///run/buildkit/buildkitd.sock").kind == "buildkitd"
    monkeypatch.setenv("BUILDKIT_HOST", "tcp://127.0.0.1:1234")
    assert resolve_address(None) == BuilderAddress("buildkitd", "tcp://127.0.0.1:1234")
    with pytest.raises(PkgtoolError, match="unsupported builder address"):
        resolve_address("ssh://host")


def test_dial_error_names_the_address(tmp_path: Path) -> None:
    with pytest.raises(PkgtoolError, match=r"cannot reach BuildKit at unix://.*/nope\.sock"):
        dial(f"unix://{tmp_path}/nope.sock")


@pytest.fixture
def fake_daemon(tmp_path: Path) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """A unix socket answering one request with a canned response; records the request."""
    path = tmp_path / "d.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    requests: list[bytes] = []
    responses: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        requests.append(data)
        conn.sendall(responses[0])
        # Echo whatever comes next, to test the upgraded stream.
        while chunk := conn.recv(4096):
            conn.sendall(chunk)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"unix://{path}", requests, responses
    listener.close()


def test_hijack_returns_bytes_past_the_101(fake_daemon: tuple[str, list[bytes], list[bytes]]) -> None:
    url, requests, responses = fake_daemon
    responses.append(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI-early")
    sock, pending = hijack(url, "/session", {"X-One": "1", "X-Many": ["a", "b"]})
    assert pending == b"PRI-early"
    head = requests[0].decode()
    assert head.startswith("POST /v1.41/session HTTP/1.1\r\n")
    assert "Upgrade: h2c\r\n" in head and "X-Many: a\r\nX-Many: b\r\n" in head
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    sock.close()


def test_hijack_refused_is_a_clear_error(fake_daemon: tuple[str, list[bytes], list[bytes]]) -> None:
    url, _requests, responses = fake_daemon
    responses.append(b"HTTP/1.1 404 Not Found\r\nContent-Length: 18\r\n\r\npage not found    ")
    with pytest.raises(PkgtoolError, match=r"cannot reach BuildKit at dockerd .*404 Not Found.*page not found"):
        hijack(url, "/grpc")


def test_splice_copies_both_ways_and_forwards_pending_bytes() -> None:
    a_outer, a_inner = socket.socketpair()
    b_outer, b_inner = socket.socketpair()
    closer = splice(a_inner, b_inner, a_pending=b"early")
    a_outer.sendall(b"to-b")
    b_outer.sendall(b"to-a")
    got_b = b""
    while len(got_b) < 9:
        got_b += b_outer.recv(100)
    assert got_b == b"earlyto-b"
    assert a_outer.recv(100) == b"to-a"
    a_outer.shutdown(socket.SHUT_WR)
    assert b_outer.recv(100) == b""  # EOF propagates
    b_outer.close()
    closer.join(timeout=5)
    assert not closer.is_alive()
    a_outer.close()


def test_frontend_attrs() -> None:
    attrs = frontend_attrs(
        dockerfile_name="Dockerfile.x", platform="linux/s390x", build_args={"V": "1"},
        labels={"org.mobyproject.config": "{}"}, network="none", no_cache=True,
    )
    assert attrs == {
        "filename": "Dockerfile.x", "platform": "linux/s390x", "build-arg:V": "1",
        "label:org.mobyproject.config": "{}", "force-network-mode": "none", "no-cache": "",
    }
    with pytest.raises(PkgtoolError, match="unknown network mode"):
        frontend_attrs(dockerfile_name="D", platform="p", build_args={}, labels={}, network="bridge", no_cache=False)


def test_committed_stubs_match_make_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    out = tmp_path / "gen"
    out.mkdir()
    subprocess.run(["make", "-s", "protos", f"GEN_DIR={out}", f"PYTHON={sys.executable}"], cwd=REPO, check=True, capture_output=True)
    committed = REPO / "pkgtool" / "buildkit" / "_gen"
    generated = sorted(p.name for p in out.iterdir())
    assert generated == sorted(p.name for p in committed.iterdir() if p.name != "__init__.py" and p.is_file())
    for name in generated:
        assert (out / name).read_bytes() == (committed / name).read_bytes(), name
    shutil.rmtree(out)
