"""pkgtool's own BuildKit client (grpcio): Control API, client session, Dockerfile solves.

The names below load their modules on first use (PEP 562), so that the plain-data parts
(:mod:`~pkgtool.buildkit.tls`, addresses in :mod:`~pkgtool.buildkit.connect`) can be
imported to check options on the no-op path without protobuf and grpc; the solve machinery
imports grpc inside the functions that need it.  Messages in ``_gen`` come from
``protos/`` via ``make protos``; client stubs from their descriptors (``stubs.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pkgtool.buildkit.connect import BuilderAddress, resolve_address
    from pkgtool.buildkit.solve import (
        BuildCancelled,
        Builder,
        BuildError,
        CacheEntry,
        Export,
        LocalExport,
        MobyExport,
        OCIExport,
        SolveResult,
        TarExport,
        Worker,
        open_builder,
    )
    from pkgtool.buildkit.status import (
        LogEvent,
        ProgressEvent,
        StatusEvent,
        VertexEvent,
        progress_callback,
    )

_HOME = {
    "BuilderAddress": "connect", "resolve_address": "connect",
    "BuildCancelled": "solve", "Builder": "solve", "BuildError": "solve", "CacheEntry": "solve",
    "Export": "solve", "LocalExport": "solve", "MobyExport": "solve", "OCIExport": "solve",
    "SolveResult": "solve", "TarExport": "solve", "Worker": "solve", "open_builder": "solve",
    "LogEvent": "status", "ProgressEvent": "status", "StatusEvent": "status", "VertexEvent": "status",
    "progress_callback": "status",
}

__all__ = [
    "BuildCancelled",
    "BuildError",
    "Builder",
    "BuilderAddress",
    "CacheEntry",
    "Export",
    "LocalExport",
    "LogEvent",
    "MobyExport",
    "OCIExport",
    "ProgressEvent",
    "SolveResult",
    "StatusEvent",
    "TarExport",
    "VertexEvent",
    "Worker",
    "open_builder",
    "progress_callback",
    "resolve_address",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
