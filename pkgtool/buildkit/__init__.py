"""pkgtool's own BuildKit client (grpcio): Control API, client session, Dockerfile solves.

Importing this package imports grpc; command modules import it inside their handlers.
Messages in ``_gen`` come from ``protos/`` via ``make protos``; client stubs from their
descriptors (``stubs.py``).
"""

from pkgtool.buildkit.connect import BuilderAddress, resolve_address
from pkgtool.buildkit.solve import (
    BuildCancelled,
    Builder,
    BuildError,
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

__all__ = [
    "BuildCancelled",
    "BuildError",
    "Builder",
    "BuilderAddress",
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
