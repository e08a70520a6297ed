"""Progress output for long work: a live view on a terminal, plain lines otherwise, JSON lines
for machines (``--progress=auto|tty|plain|json``).

Producers (BuildKit status streams, pushes, pulls) report *steps* and *logs* under a *group*
(for builds: ``image linux/arm64``).  The reporter is thread-safe because per-arch solves
stream concurrently.  It keeps the last log lines of every step so that a failure can show
what the failing step printed, like buildx does.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

MODES = ("auto", "tty", "plain", "json")
_TAIL_LINES = 12
_REDRAW_SECONDS = 0.1


@dataclass
class _Step:
    group: str
    key: str
    name: str
    started: float | None = None
    finished: float | None = None
    cached: bool = False
    error: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    partial: str = ""

    @property
    def state(self) -> str:
        if self.error:
            return "ERROR"
        if self.cached:
            return "CACHED"
        if self.finished is not None:
            return "DONE"
        return "RUNNING" if self.started is not None else "WAITING"

    def duration(self, now: float) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or now) - self.started


def resolve_mode(mode: str, stream: TextIO) -> str:
    if mode not in MODES:
        raise ValueError(mode)
    if mode != "auto":
        return mode
    if os.environ.get("PKGTOOL_PROGRESS") in MODES[1:]:
        return os.environ["PKGTOOL_PROGRESS"]
    return "tty" if stream.isatty() and os.environ.get("TERM") != "dumb" else "plain"


class Progress:
    """Thread-safe progress reporter; use as a context manager around the work."""

    def __init__(self, mode: str = "auto", *, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.mode = resolve_mode(mode, self.stream)
        self._lock = threading.Lock()
        self._steps: dict[tuple[str, str], _Step] = {}
        self._order: list[_Step] = []
        self._drawn_lines = 0
        self._last_draw = 0.0
        self._t0 = time.monotonic()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producers ---------------------------------------------------------------------
    def message(self, text: str, *, group: str = "") -> None:
        """A one-off line (``pkg/sshd: up to date``)."""
        with self._lock:
            if self.mode == "json":
                self._emit_json({"type": "message", "group": group, "text": text})
                return
            self._clear_live()
            self.stream.write(f"{group + ': ' if group else ''}{text}\n")
            self._draw_live(force=True)
            self.stream.flush()

    def step(
        self,
        group: str,
        key: str,
        name: str,
        *,
        started: bool = False,
        finished: bool = False,
        cached: bool = False,
        error: str = "",
    ) -> None:
        """Create or update step ``key`` of ``group``; state only moves forward."""
        now = time.monotonic()
        with self._lock:
            step = self._steps.get((group, key))
            if step is None:
                step = _Step(group=group, key=key, name=name)
                self._steps[(group, key)] = step
                self._order.append(step)
            before = step.state
            if name:
                step.name = name
            if (started or finished or cached or error) and step.started is None:
                step.started = now
            if cached:
                step.cached = True
            if error:
                step.error = error
            if (finished or cached or error) and step.finished is None:
                step.finished = now
            if step.state != before:
                self._report_state(step, now)

    def log(self, group: str, key: str, data: bytes) -> None:
        """Output of a running step (RUN's stdout/stderr)."""
        text = data.decode("utf-8", "replace")
        with self._lock:
            step = self._steps.get((group, key))
            if step is None:
                step = _Step(group=group, key=key, name=key)
                self._steps[(group, key)] = step
                self._order.append(step)
            lines = (step.partial + text).split("\n")
            step.partial = lines.pop()
            for line in lines:
                step.tail.append(line.rstrip("\r"))
                if self.mode == "json":
                    self._emit_json({"type": "log", "group": group, "step": step.name, "line": line})
                elif self.mode == "plain":
                    self.stream.write(f"[{group}] {_short(step.name)} | {line}\n")
            if self.mode == "tty":
                self._draw_live()
            self.stream.flush()

    def failure_tail(self, group: str) -> tuple[str, list[str]]:
        """The failing (or last) step of ``group`` and its last log lines, for error messages."""
        with self._lock:
            steps = [s for s in self._order if s.group == group]
            failed = [s for s in steps if s.error] or steps[-1:]
            if not failed:
                return "", []
            step = failed[0]
            tail = list(step.tail) + ([step.partial] if step.partial else [])
            return step.name, tail

    def close(self) -> None:
        with self._lock:
            if self.mode == "tty":
                self._clear_live()
                now = time.monotonic()
                for step in self._order:
                    self.stream.write(self._format_step(step, now) + "\n")
                self._order.clear()
                self._steps.clear()
            self.stream.flush()

    # -- rendering ---------------------------------------------------------------------
    def _report_state(self, step: _Step, now: float) -> None:
        if self.mode == "json":
            self._emit_json(
                {
                    "type": "step",
                    "group": step.group,
                    "step": step.name,
                    "state": step.state.lower(),
                    "seconds": round(step.duration(now), 3),
                    **({"error": step.error} if step.error else {}),
                }
            )
        elif self.mode == "plain":
            if step.state in ("RUNNING",):
                self.stream.write(f"[{step.group}] {step.name}\n")
            else:
                self.stream.write(self._format_step(step, now) + "\n")
        else:
            self._draw_live(force=step.state in ("ERROR", "DONE", "CACHED"))
        self.stream.flush()

    def _format_step(self, step: _Step, now: float) -> str:
        state = step.state
        timing = f" {step.duration(now):.1f}s" if state in ("DONE", "RUNNING", "ERROR") else ""
        line = f"[{step.group}] {state:<7}{timing:>7} {step.name}"
        if step.error:
            line += f"\n    error: {step.error}"
        return line

    def _emit_json(self, record: dict[str, object]) -> None:
        record["time"] = round(time.monotonic() - self._t0, 3)
        self.stream.write(json.dumps(record, sort_keys=True) + "\n")

    def _clear_live(self) -> None:
        if self.mode == "tty" and self._drawn_lines:
            self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
            self._drawn_lines = 0

    def _draw_live(self, *, force: bool = False) -> None:
        if self.mode != "tty":
            return
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_SECONDS:
            return
        self._last_draw = now
        self._clear_live()
        width = _terminal_width(self.stream)
        # Finished steps scroll away; the live region shows what runs now plus a few recent.
        active = [s for s in self._order if s.state in ("RUNNING", "WAITING")]
        recent = [s for s in self._order if s.state not in ("RUNNING", "WAITING")][-4:]
        lines: list[str] = []
        for step in [*recent, *active][-16:]:
            lines.append(self._format_step(step, now).split("\n")[0][:width])
            if step.state == "RUNNING" and step.tail:
                lines.append(("    " + step.tail[-1])[:width])
        if lines:
            self.stream.write("\n".join(lines) + "\n")
        self._drawn_lines = len(lines)


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 120
