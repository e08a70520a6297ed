"""The progress reporter in each output mode."""

from __future__ import annotations

import io
import json

from pkgtool.progress import Progress


def test_plain_mode_reports_states_and_logs() -> None:
    out = io.StringIO()
    with Progress("plain", stream=out) as progress:
        progress.step("img linux/arm64", "v1", "[2/3] RUN make", started=True)
        progress.log("img linux/arm64", "v1", b"compiling\nlinking\n")
        progress.step("img linux/arm64", "v1", "[2/3] RUN make", finished=True)
        progress.step("img linux/arm64", "v2", "[1/3] FROM base", cached=True)
    text = out.getvalue()
    assert "[img linux/arm64] [2/3] RUN make" in text
    assert "[img linux/arm64] [2/3] RUN make | compiling" in text
    assert "DONE" in text and "CACHED" in text


def test_json_mode_emits_one_object_per_line() -> None:
    out = io.StringIO()
    with Progress("json", stream=out) as progress:
        progress.message("up to date", group="pkg/x")
        progress.step("g", "k", "RUN false", started=True)
        progress.step("g", "k", "RUN false", error="exit code: 1")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["type"] for r in records] == ["message", "step", "step"]
    assert records[-1]["state"] == "error" and records[-1]["error"] == "exit code: 1"


def test_failure_tail_keeps_last_lines_of_failing_step() -> None:
    progress = Progress("json", stream=io.StringIO())
    progress.step("g", "ok", "COPY . /", finished=True)
    progress.step("g", "bad", "RUN ./build.sh", started=True)
    for i in range(30):
        progress.log("g", "bad", f"line {i}\n".encode())
    progress.log("g", "bad", b"no newline at end")
    progress.step("g", "bad", "RUN ./build.sh", error="exit code: 2")
    name, tail = progress.failure_tail("g")
    assert name == "RUN ./build.sh"
    assert tail[-1] == "no newline at end"
    assert tail[-2] == "line 29"
    assert len(tail) <= 13


def test_tty_mode_redraws_and_ends_with_summary() -> None:
    out = io.StringIO()
    with Progress("tty", stream=out) as progress:
        progress.step("g", "a", "RUN one", started=True)
        progress.step("g", "a", "RUN one", finished=True)
    text = out.getvalue()
    assert "\x1b[" in text  # live region was redrawn
    assert text.rstrip().endswith("RUN one")
