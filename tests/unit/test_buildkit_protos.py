"""Our .proto files keep BuildKit's field numbers and method paths (the wire contract)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pkgtool.buildkit._gen import (
    auth_pb2,
    control_pb2,
    filesync_pb2,
    health_pb2,
    stat_pb2,
    wire_pb2,
    worker_pb2,
)

FIELDS = [
    (control_pb2.SolveRequest, {"Ref": 1, "Exporter": 3, "ExporterAttrs": 4, "Session": 5, "Frontend": 6,
                                "FrontendAttrs": 7, "Cache": 8, "Entitlements": 9}),
    (control_pb2.CacheOptions, {"Exports": 4, "Imports": 5}),
    (control_pb2.CacheOptionsEntry, {"Type": 1, "Attrs": 2}),
    (control_pb2.SolveResponse, {"ExporterResponse": 1}),
    (control_pb2.StatusResponse, {"vertexes": 1, "statuses": 2, "logs": 3}),
    (control_pb2.Vertex, {"digest": 1, "inputs": 2, "name": 3, "cached": 4, "started": 5, "completed": 6, "error": 7}),
    (control_pb2.VertexStatus, {"ID": 1, "vertex": 2, "name": 3, "current": 4, "total": 5, "timestamp": 6,
                                "started": 7, "completed": 8}),
    (control_pb2.VertexLog, {"vertex": 1, "timestamp": 2, "stream": 3, "msg": 4}),
    (control_pb2.ListWorkersResponse, {"record": 1}),
    (worker_pb2.WorkerRecord, {"ID": 1, "Labels": 2, "platforms": 3}),
    (stat_pb2.Stat, {"path": 1, "mode": 2, "uid": 3, "gid": 4, "size": 5, "modTime": 6, "linkname": 7,
                     "devmajor": 8, "devminor": 9, "xattrs": 10}),
    (wire_pb2.Packet, {"type": 1, "stat": 2, "ID": 3, "data": 4}),
    (filesync_pb2.BytesMessage, {"data": 1}),
    (auth_pb2.CredentialsResponse, {"Username": 1, "Secret": 2}),
]


@pytest.mark.parametrize(("message", "numbers"), FIELDS, ids=lambda v: getattr(v, "__name__", ""))
def test_field_numbers_match_buildkit(message: type, numbers: dict[str, int]) -> None:
    fields = message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    assert {name: fields[name].number for name in numbers} == numbers


def test_method_paths() -> None:
    def paths(module: object) -> set[str]:
        desc = module.DESCRIPTOR  # type: ignore[attr-defined]
        return {f"/{svc.full_name}/{m.name}" for svc in desc.services_by_name.values() for m in svc.methods}

    assert paths(control_pb2) == {f"/moby.buildkit.v1.Control/{m}" for m in ("Solve", "Status", "Session", "ListWorkers")}
    assert "/moby.filesync.v1.FileSync/DiffCopy" in paths(filesync_pb2)
    assert "/moby.filesync.v1.FileSend/DiffCopy" in paths(filesync_pb2)
    assert paths(auth_pb2) == {"/moby.filesync.v1.Auth/Credentials"}
    assert paths(health_pb2) == {"/grpc.health.v1.Health/Check"}


def test_packet_types() -> None:
    P = wire_pb2.Packet
    assert (P.PACKET_STAT, P.PACKET_REQ, P.PACKET_DATA, P.PACKET_FIN, P.PACKET_ERR) == (0, 1, 2, 3, 4)


def test_runtime_does_not_need_grpc_tools() -> None:
    code = (
        "import sys; sys.modules['grpc_tools'] = None\n"
        "import pkgtool.buildkit, pkgtool.buildkit.session, pkgtool.buildkit.stubs\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
