"""BuildKit's Status stream as a small typed event stream.

BuildKit resends a vertex every time anything about it changes; :class:`StatusTracker`
turns that into one event per state change (started, then completed, cached or error),
progress events for pulls and exports, and log events for RUN output.  It also keeps the
last log lines of every vertex so a failure can show what the failing step printed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pkgtool.progress import Progress

TAIL_LINES = 20

VertexState = Literal["started", "completed", "cached", "error"]


@dataclass(frozen=True)
class VertexEvent:
    """A build step changed state."""

    digest: str
    name: str
    state: VertexState
    error: str = ""
    started: float | None = None
    completed: float | None = None


@dataclass(frozen=True)
class ProgressEvent:
    """Progress inside a step (layer pulls, context transfer, export)."""

    digest: str
    id: str
    name: str
    current: int
    total: int
    done: bool


@dataclass(frozen=True)
class LogEvent:
    """Output of a step; ``stream`` 1 is stdout, 2 is stderr."""

    digest: str
    name: str
    stream: int
    data: bytes


StatusEvent = VertexEvent | ProgressEvent | LogEvent
StatusCallback = Callable[[StatusEvent], None]


def _seconds(ts: Any, has: bool) -> float | None:
    if not has:
        return None
    return float(ts.seconds) + float(ts.nanos) / 1e9


@dataclass
class _VertexState:
    name: str = ""
    state: str = ""
    error: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    partial: str = ""


class StatusTracker:
    """Feed it StatusResponse messages; it yields events and remembers failures."""

    def __init__(self) -> None:
        self._vertexes: dict[str, _VertexState] = {}

    def feed(self, response: Any) -> Iterator[StatusEvent]:
        for v in response.vertexes:
            state = self._vertexes.setdefault(v.digest, _VertexState())
            state.name = v.name or state.name
            has_started, has_completed = v.HasField("started"), v.HasField("completed")
            new: VertexState | None = None
            if v.error:
                new = "error"
            elif has_completed:
                new = "cached" if v.cached else "completed"
            elif has_started or v.cached:
                new = "started" if not v.cached else "cached"
            if new is None or new == state.state:
                continue
            if state.state in ("completed", "cached", "error") and new == "started":
                continue
            state.state, state.error = new, v.error
            yield VertexEvent(
                digest=v.digest, name=state.name, state=new, error=v.error,
                started=_seconds(v.started, has_started), completed=_seconds(v.completed, has_completed),
            )
        for s in response.statuses:
            yield ProgressEvent(
                digest=s.vertex, id=s.ID, name=s.name or s.ID, current=s.current, total=s.total,
                done=s.HasField("completed"),
            )
        for entry in response.logs:
            state = self._vertexes.setdefault(entry.vertex, _VertexState())
            self._remember(state, entry.msg)
            yield LogEvent(digest=entry.vertex, name=state.name, stream=entry.stream, data=entry.msg)

    @staticmethod
    def _remember(state: _VertexState, data: bytes) -> None:
        text = state.partial + data.decode(errors="replace")
        *lines, state.partial = text.replace("\r\n", "\n").split("\n")
        state.tail.extend(line for line in lines)

    def failed(self) -> tuple[str, str, list[str]] | None:
        """(step name, error, last log lines) of the first failed vertex seen, if any."""
        for state in self._vertexes.values():
            if state.state == "error":
                tail = list(state.tail) + ([state.partial] if state.partial else [])
                return state.name, state.error, tail
        return None

    def tail(self, digest: str) -> list[str]:
        state = self._vertexes.get(digest)
        return list(state.tail) if state else []


def progress_callback(progress: Progress, group: str) -> StatusCallback:
    """An ``on_status`` that shows one solve's steps and logs under ``group`` (e.g. "sshd linux/arm64")."""

    def on_status(event: StatusEvent) -> None:
        if isinstance(event, VertexEvent):
            progress.step(
                group, event.digest, event.name,
                started=event.state == "started", finished=event.state == "completed",
                cached=event.state == "cached", error=event.error,
            )
        elif isinstance(event, LogEvent):
            progress.step(group, event.digest, event.name)
            progress.log(group, event.digest, event.data)

    return on_status
