"""Atomic file replacement: readers see the old content or the new, never a mix or a stub."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

TEMP_PREFIX = ".pkgtool-tmp-"


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename.

    ``mode`` defaults to the existing file's permission bits (0644 for a new file), so
    rewriting an executable keeps it executable.
    """
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o644
    tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; some file systems refuse to fsync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def replace_on_lines(path: Path, edits: list[tuple[int, str, str]]) -> None:
    """Replace ``old`` by ``new`` on 1-based line ``line`` for each edit, atomically.

    Each ``old`` must occur exactly once on its line, so an edit can never land on the
    wrong text; everything else in the file (comments, quoting, layout) is kept.
    """
    from pkgtool.errors import UsageError

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for line, old, new in edits:
        index = line - 1
        if not 0 <= index < len(lines) or lines[index].count(old) != 1:
            raise UsageError(f"{path}:{line}: cannot rewrite {old!r} in place (put it on its own line)")
        lines[index] = lines[index].replace(old, new)
    atomic_write(path, "".join(lines).encode("utf-8"))
