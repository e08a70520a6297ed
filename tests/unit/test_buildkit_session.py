"""The session server, served over a real grpcio unix socket, plus its option decoding."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pkgtool.buildkit._gen import (
    auth_pb2,
    health_pb2,
    wire_pb2,
)
from pkgtool.buildkit.session import (
    M_FILESEND,
    M_HEALTH,
    ExportTarget,
    Session,
    docker_credentials,
    shared_key,
    transfer_options,
)
from pkgtool.buildkit.stubs import service_stub


def test_transfer_options_decode_repeated_and_encoded_values() -> None:
    md = [
        ("dir-name", "context"),
        ("exclude-patterns", "*.o"),
        ("exclude-patterns", "build%2F%C3%BC"),
        ("exclude-patterns-encoded", "1"),
        ("followpaths", "Dockerfile"),
    ]
    opts = transfer_options(md)
    assert opts["dir-name"] == ["context"]
    assert opts["exclude-patterns"] == ["*.o", "build/ü"]
    assert opts["followpaths"] == ["Dockerfile"]


def test_shared_key_is_stable_per_dir(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert shared_key(tmp_path / "a") == shared_key(tmp_path / "a" / ".." / "a")
    assert shared_key(tmp_path / "a") != shared_key(tmp_path / "b")


def write_config(directory: Path, config: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_docker_credentials(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:s3cret:with:colons").decode()
    cfg = write_config(tmp_path / "d", {"auths": {
        "reg.example:5000": {"auth": auth},
        "https://tok.example/v1/": {"identitytoken": "tkn"},
        "plain.example": {"username": "bob", "password": "pw"},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
    }})
    assert docker_credentials("reg.example:5000", config_dir=cfg) == ("alice", "s3cret:with:colons")
    assert docker_credentials("tok.example", config_dir=cfg) == ("", "tkn")
    assert docker_credentials("plain.example", config_dir=cfg) == ("bob", "pw")
    assert docker_credentials("registry-1.docker.io", config_dir=cfg) == ("hub", "pw")
    assert docker_credentials("other.example", config_dir=cfg) == ("", "")
    assert docker_credentials("x", config_dir=tmp_path / "missing") == ("", "")


def test_session_headers_name_every_served_method(tmp_path: Path) -> None:
    plain = Session(dirs={}, name="ctx", key="k")
    assert M_HEALTH in plain.methods and M_FILESEND not in plain.methods
    exporting = Session(dirs={}, name="ctx", key="k", export=ExportTarget("tar", tmp_path / "o.tar"))
    headers = exporting.headers
    assert headers["X-Docker-Expose-Session-Uuid"] == exporting.id
    assert headers["X-Docker-Expose-Session-Sharedkey"] == "k"
    assert M_FILESEND in headers["X-Docker-Expose-Session-Grpc-Method"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Session, grpc.Channel]]:
    ctx = tmp_path / "ctx"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub" / "f").write_text("data")
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    with Session(dirs={"context": ctx}, name="ctx", key="k") as session:
        channel = grpc.insecure_channel(f"unix://{session._socket_path}")
        yield session, channel
        channel.close()


def test_health_and_credentials_answer(served: tuple[Session, grpc.Channel]) -> None:
    _session, channel = served
    health = service_stub(channel, health_pb2, "Health")
    resp = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    auth = service_stub(channel, auth_pb2, "Auth")
    creds = auth.Credentials(auth_pb2.CredentialsRequest(Host="127.0.0.1:5000"), timeout=5)
    assert (creds.Username, creds.Secret) == ("", "")


def _diff_copy(channel: grpc.Channel, dir_name: str, requests: list[wire_pb2.Packet], **extra: str) -> list[wire_pb2.Packet]:
    call = channel.stream_stream(
        "/moby.filesync.v1.FileSync/DiffCopy",
        request_serializer=wire_pb2.Packet.SerializeToString,
        response_deserializer=wire_pb2.Packet.FromString,
    )
    metadata = [("dir-name", dir_name), *extra.items()]
    return list(call(iter(requests), metadata=metadata, timeout=10))


def test_filesync_serves_a_named_dir(served: tuple[Session, grpc.Channel]) -> None:
    session, channel = served
    fin = wire_pb2.Packet(type=wire_pb2.Packet.PACKET_FIN)
    req = wire_pb2.Packet(type=wire_pb2.Packet.PACKET_REQ, ID=2)
    out = _diff_copy(channel, "context", [req, fin])
    assert [p.stat.path for p in out if p.type == wire_pb2.Packet.PACKET_STAT] == ["Dockerfile", "sub", "sub/f", ""]
    assert [p.data for p in out if p.type == wire_pb2.Packet.PACKET_DATA] == [b"data", b""]
    assert out[-1].type == wire_pb2.Packet.PACKET_FIN
    assert session.transfers["context"].bytes_sent == 4
    # followpaths narrows the listing, like the Dockerfile transfer does.
    only = _diff_copy(channel, "context", [fin], followpaths="Dockerfile")
    assert [p.stat.path for p in only if p.type == wire_pb2.Packet.PACKET_STAT] == ["Dockerfile", ""]


def test_filesync_refuses_unknown_dirs(served: tuple[Session, grpc.Channel]) -> None:
    _session, channel = served
    with pytest.raises(grpc.RpcError) as info:
        _diff_copy(channel, "secrets", [])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
