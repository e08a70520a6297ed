"""Stand-in directory walk until pkgtool.fswalk lands: fsutil order, followpaths only."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pkgtool.errors import PkgtoolError


@dataclass(frozen=True)
class Entry:
    relpath: str
    stat: os.stat_result
    link_target: str | None


def _wanted(rel: str, prefixes: Sequence[str], *, is_dir: bool) -> bool:
    if not prefixes:
        return True
    for p in prefixes:
        if rel == p or rel.startswith(p + "/") or (is_dir and p.startswith(rel + "/")):
            return True
    return False


def walk(root: Path, *, excludes: Sequence[str] = (), includes: Sequence[str] = (), followpaths: Sequence[str] = ()) -> Iterator[Entry]:
    if excludes:
        raise PkgtoolError(f"{root}: .dockerignore patterns are not supported yet")
    prefixes = [p.strip("/") for p in [*includes, *followpaths]]

    def visit(directory: Path, prefix: str) -> Iterator[Entry]:
        names = sorted(os.listdir(directory), key=os.fsencode)
        for name in names:
            rel = f"{prefix}{name}"
            st = os.lstat(directory / name)
            is_dir = os.path.isdir(directory / name) and not os.path.islink(directory / name)
            if not _wanted(rel, prefixes, is_dir=is_dir):
                continue
            link = os.readlink(directory / name) if os.path.islink(directory / name) else None
            yield Entry(rel, st, link)
            if is_dir:
                yield from visit(directory / name, rel + "/")

    yield from visit(root, "")
