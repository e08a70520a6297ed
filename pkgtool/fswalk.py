"""Walk a directory the way BuildKit's fsutil walks a build context.

Order: depth-first, a directory right before its contents, the names of each directory
sorted bytewise (Go's ``os.ReadDir`` order).  That is the order fsutil's receiver insists
on ("changes out of order" otherwise), so the FileSync sender streams :func:`walk`'s output
as is, and the content hash uses the same walk so that it sees exactly what a build sees.

Filtering follows fsutil's ``filterFS``:

* ``includes``: only paths matching one of them (or below a match) are yielded;
* ``excludes``: .dockerignore patterns (:mod:`pkgtool.dockerignore`); an excluded directory
  is not walked unless an exception pattern may re-include something below it;
* ``followpaths``: paths whose symlinks (at any component) are resolved inside the root,
  and the links and their targets added to ``includes`` (BuildKit asks for the Dockerfile
  this way);
* a directory that is itself excluded, or matched no include pattern, but holds something
  that is yielded is yielded too, right before the first such entry.

Symlinks are never followed; they are yielded with their target.
"""

from __future__ import annotations

import os
import posixpath
import stat as statmod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pkgtool.dockerignore import MatchInfo, PatternMatcher, compile_pattern
from pkgtool.errors import PkgtoolError


@dataclass(frozen=True)
class Entry:
    """One walked path.  ``relpath`` uses ``/`` and never starts with ``./``."""

    relpath: str
    stat: os.stat_result
    link_target: str | None
    abspath: Path

    @property
    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.stat.st_mode)


def sorted_names(directory: str | Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` in bytewise name order."""
    with os.scandir(directory) as it:
        return sorted(it, key=lambda d: os.fsencode(d.name))


def walk(
    root: Path,
    *,
    excludes: Sequence[str] = (),
    includes: Sequence[str] = (),
    followpaths: Sequence[str] = (),
) -> Iterator[Entry]:
    """Yield the entries below ``root`` (not ``root`` itself) in fsutil order."""
    root = Path(root)
    if not root.is_dir():
        raise PkgtoolError(f"{root}: not a directory")
    include_patterns = [p for p in includes if p.strip()]
    if followpaths:
        # None: "." was among them, and everything is included.
        include_patterns = _dedupe(sorted({*include_patterns, *follow_links(root, followpaths)})) or []
    inc = PatternMatcher(include_patterns) if include_patterns else None
    exc = PatternMatcher(excludes) if any(p.strip() for p in excludes) else None
    # Directories skipped by the filters but walked into; yielded if anything below is.
    pending: list[Entry] = []

    def visit(directory: Path, prefix: str, inc_info: MatchInfo | None, exc_info: MatchInfo | None) -> Iterator[Entry]:
        try:
            children = sorted_names(directory)
        except OSError as exc_:
            raise PkgtoolError(f"{directory}: cannot list directory: {exc_.strerror or exc_}") from None
        for child in children:
            rel = prefix + child.name
            try:
                st = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we walk: it is simply not part of the context
            except OSError as exc_:
                raise PkgtoolError(f"{child.path}: cannot stat: {exc_.strerror or exc_}") from None
            is_dir = statmod.S_ISDIR(st.st_mode)
            skip = False
            child_inc = child_exc = None
            if inc is not None:
                matched, child_inc = inc.match_with_parent(rel, inc_info)
                if not matched:
                    if is_dir and not inc.may_include_below(rel):
                        continue
                    skip = True
            if exc is not None:
                matched, child_exc = exc.match_with_parent(rel, exc_info)
                if matched:
                    if is_dir and not exc.must_descend(rel):
                        continue
                    skip = True
            link = None
            if statmod.S_ISLNK(st.st_mode):
                try:
                    link = os.readlink(child.path)
                except OSError as exc_:
                    raise PkgtoolError(f"{child.path}: cannot read link: {exc_.strerror or exc_}") from None
            entry = Entry(rel, st, link, Path(child.path))
            if not skip:
                yield from pending
                pending.clear()
                yield entry
            if is_dir:
                if skip:
                    pending.append(entry)
                yield from visit(Path(child.path), rel + "/", child_inc, child_exc)
                if pending and pending[-1] is entry:
                    pending.pop()

    yield from visit(root, "", None, None)


def _dedupe(paths: list[str]) -> list[str] | None:
    """Sorted paths minus those below another one; None when "." (everything) is there."""
    out: list[str] = []
    for p in paths:
        if p == ".":
            return None
        if out and p.startswith(out[-1] + "/"):
            continue
        out.append(p)
    return out


def follow_links(root: Path, paths: Sequence[str]) -> list[str]:
    """fsutil's ``FollowLinks``: each path with every symlink on it resolved within ``root``.

    Returns the paths, the symlinks met on the way and their targets (all relative to
    ``root``), so that including them all makes the original paths resolvable.  A last
    component may be a wildcard (``Dockerfile*``).
    """
    resolved: set[str] = set()

    def targets_of(current: str, *, wildcard: bool) -> list[str] | None:
        base = posixpath.basename(current)
        if wildcard and any(c in base for c in "*?[\\"):
            parent = posixpath.dirname(current) or "."
            try:
                names = sorted_names(root / parent)
            except OSError:
                return None
            try:
                pattern = compile_pattern(base)
            except PkgtoolError:
                return None
            found: list[str] = []
            for d in names:
                if pattern.match(d.name):
                    found += targets_of(posixpath.join(parent, d.name), wildcard=False) or []
            return found
        full = root / current
        if not full.is_symlink():
            return None
        link = posixpath.normpath(os.readlink(full))
        if link.startswith("/"):
            return [link]
        return ["/" + posixpath.normpath(posixpath.join(posixpath.dirname(current), link))]

    def add(path: str, depth: int) -> None:
        if depth > 255:
            raise PkgtoolError(f"{root}: too many levels of symbolic links resolving {path!r}")
        rest = posixpath.normpath(posixpath.join(".", path)).lstrip("/")
        rest = "." if rest in ("", ".") else posixpath.normpath(rest)
        if rest == ".." or rest.startswith("../"):
            return  # outside the root: nothing there can be sent
        current = "."
        while True:
            head, _, rest = rest.partition("/")
            current = posixpath.normpath(posixpath.join(current, head))
            targets = targets_of(current, wildcard=True) if current != "." else None
            if (not rest or targets is not None) and current in resolved:
                return
            if targets is not None:
                resolved.add(current)
                for target in targets:
                    add(posixpath.join(target, rest) if rest else target, depth + 1)
                return
            if not rest:
                resolved.add(current)
                return

    for p in paths:
        add(p, 0)
    return sorted(resolved)
