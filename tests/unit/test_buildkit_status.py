"""StatusResponse -> typed events: one event per state change, log tails for failures."""

from __future__ import annotations

from pkgtool.buildkit._gen import control_pb2
from pkgtool.buildkit.status import LogEvent, ProgressEvent, StatusTracker, VertexEvent


def vertex(digest: str, name: str, *, started: int = 0, completed: int = 0, cached: bool = False, error: str = "") -> control_pb2.Vertex:
    v = control_pb2.Vertex(digest=digest, name=name, cached=cached, error=error)
    if started:
        v.started.seconds = started
    if completed:
        v.completed.seconds = completed
    return v


def feed(tracker: StatusTracker, **fields: object) -> list[object]:
    return list(tracker.feed(control_pb2.StatusResponse(**fields)))  # type: ignore[arg-type]


def test_vertex_states_are_reported_once() -> None:
    t = StatusTracker()
    assert feed(t, vertexes=[vertex("d1", "[1/2] RUN make")]) == []  # not started yet
    [ev] = feed(t, vertexes=[vertex("d1", "[1/2] RUN make", started=10)])
    assert ev == VertexEvent(digest="d1", name="[1/2] RUN make", state="started", started=10.0)
    assert feed(t, vertexes=[vertex("d1", "[1/2] RUN make", started=10)]) == []
    [done] = feed(t, vertexes=[vertex("d1", "[1/2] RUN make", started=10, completed=12)])
    assert isinstance(done, VertexEvent) and done.state == "completed" and done.completed == 12.0
    # A late duplicate "started" after completion is ignored.
    assert feed(t, vertexes=[vertex("d1", "", started=10)]) == []


def test_cached_vertex() -> None:
    t = StatusTracker()
    [ev] = feed(t, vertexes=[vertex("d2", "[2/2] COPY . /", started=5, completed=5, cached=True)])
    assert isinstance(ev, VertexEvent) and ev.state == "cached"


def test_progress_and_logs_carry_the_vertex_name() -> None:
    t = StatusTracker()
    feed(t, vertexes=[vertex("d3", "[1/1] RUN echo", started=1)])
    events = feed(
        t,
        statuses=[control_pb2.VertexStatus(ID="sha256:abc", vertex="d3", current=5, total=10)],
        logs=[control_pb2.VertexLog(vertex="d3", stream=1, msg=b"hello\n")],
    )
    assert events == [
        ProgressEvent(digest="d3", id="sha256:abc", name="sha256:abc", current=5, total=10, done=False),
        LogEvent(digest="d3", name="[1/1] RUN echo", stream=1, data=b"hello\n"),
    ]


def test_failed_vertex_keeps_its_last_lines() -> None:
    t = StatusTracker()
    feed(t, vertexes=[vertex("ok", "[1/2] COPY", started=1, completed=2)])
    feed(t, vertexes=[vertex("bad", "[2/2] RUN false", started=2)])
    lines = b"".join(f"line {i}\n".encode() for i in range(30))
    feed(t, logs=[control_pb2.VertexLog(vertex="bad", stream=2, msg=lines[:50]),
                  control_pb2.VertexLog(vertex="bad", stream=2, msg=lines[50:] + b"no newline")])
    [ev] = feed(t, vertexes=[vertex("bad", "[2/2] RUN false", started=2, completed=3, error="exit code: 1")])
    assert isinstance(ev, VertexEvent) and ev.state == "error" and ev.error == "exit code: 1"
    failed = t.failed()
    assert failed is not None
    step, error, tail = failed
    assert step == "[2/2] RUN false" and error == "exit code: 1"
    assert tail[-2:] == ["line 29", "no newline"]
    assert len(tail) == 21  # 20 complete lines kept, plus the unterminated one


def test_progress_callback_feeds_the_reporter() -> None:
    import io
    import json

    from pkgtool.buildkit.status import progress_callback
    from pkgtool.progress import Progress

    out = io.StringIO()
    t = StatusTracker()
    with Progress("json", stream=out) as progress:
        on_status = progress_callback(progress, "pkg linux/arm64")
        for resp in (
            control_pb2.StatusResponse(vertexes=[vertex("c", "[1/2] COPY", started=1, completed=1, cached=True)]),
            control_pb2.StatusResponse(vertexes=[vertex("r", "[2/2] RUN make", started=2)]),
            control_pb2.StatusResponse(logs=[control_pb2.VertexLog(vertex="r", stream=2, msg=b"cc: error\n")]),
            control_pb2.StatusResponse(vertexes=[vertex("r", "[2/2] RUN make", started=2, completed=3, error="exit code: 2")]),
        ):
            for event in t.feed(resp):
                on_status(event)
        assert progress.failure_tail("pkg linux/arm64") == ("[2/2] RUN make", ["cc: error"])
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(r.get("type") == "log" and r.get("line") == "cc: error" for r in records)
