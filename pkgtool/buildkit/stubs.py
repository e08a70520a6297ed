"""Client stubs built from the service descriptors in our ``_pb2`` modules.

protoc's gRPC plugin would generate a stub *and* a servicer base class per service; the
session server registers its handlers directly (``session.py``) and the client needs only
method callables, so one small function derived from the descriptors replaces the
generated ``_pb2_grpc`` modules (and keeps ``make protos`` to plain protobuf output).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from google.protobuf.message_factory import GetMessageClass


def service_stub(channel: Any, module: Any, service: str) -> Any:
    """An object with one callable per method of ``service`` in the ``_pb2`` ``module``,
    as ``channel.unary_unary`` / ``unary_stream`` / ``stream_stream`` make them."""
    descriptor = module.DESCRIPTOR.services_by_name[service]
    methods: dict[str, Any] = {}
    for method in descriptor.methods:
        kind = ("stream" if method.client_streaming else "unary") + "_" + ("stream" if method.server_streaming else "unary")
        methods[method.name] = getattr(channel, kind)(
            f"/{descriptor.full_name}/{method.name}",
            request_serializer=GetMessageClass(method.input_type).SerializeToString,
            response_deserializer=GetMessageClass(method.output_type).FromString,
        )
    return SimpleNamespace(**methods)
