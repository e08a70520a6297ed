""".dockerignore files and the pattern matching BuildKit applies to them.

The rules are those of moby's ``patternmatcher`` and ``ignorefile`` packages, which BuildKit
(fsutil) uses when it filters a build context:

* reading: a UTF-8 BOM is dropped; lines *starting* with ``#`` are comments; surrounding
  whitespace is trimmed; blank lines are skipped; ``!`` marks an exception; each pattern is
  ``filepath.Clean``-ed and a leading ``/`` is dropped (``/a/b`` and ``a/b`` are the same);
* matching is on slash-separated paths relative to the context root: ``*`` and ``?`` never
  cross ``/``; ``**`` matches any number of path components (also none); ``[a-z]``/``[^a]``
  are character classes with ``filepath.Match``'s syntax; ``\\`` escapes the next character;
* a pattern that matches a parent directory matches everything below it;
* patterns apply in order and the last one that matches a path decides (an exception
  ``!p`` re-includes what an earlier pattern excluded; a later pattern excludes it again).

A trailing ``/`` is cleaned away, so patterns cannot tell directories from files; that is
BuildKit's behaviour too.  ``Dockerfile`` and ``.dockerignore`` are not special here: BuildKit
sends the Dockerfile through its own channel whatever the context excludes, and the content
hash adds both explicitly (see :mod:`pkgtool.hashing`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pkgtool.errors import UsageError

_BOM = "\ufeff"
# Characters that make a pattern more than a plain path prefix (fsutil's ``patternChars``).
_PATTERN_CHARS = frozenset("*[]?^\\")
# Regex metacharacters that have no meaning in a path pattern and so stand for themselves.
_LITERAL_META = frozenset(".+()|{}$")


def parse_dockerignore(text: str) -> list[str]:
    """The patterns of a .dockerignore file's text, normalised as BuildKit reads them."""
    patterns: list[str] = []
    for number, raw in enumerate(text.splitlines()):
        line = raw.removeprefix(_BOM) if number == 0 else raw
        # Only a '#' in the first column starts a comment (moby's ignorefile rule).
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = posixpath.normpath(line)
            # normpath keeps a leading '//' (POSIX allows it a meaning); Go's Clean does not.
            if line.startswith("//"):
                line = "/" + line.lstrip("/")
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


def read_dockerignore(directory: Path) -> list[str]:
    """The patterns of ``directory/.dockerignore``; none when the file does not exist."""
    path = directory / ".dockerignore"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_dockerignore(data.decode("utf-8", errors="surrogateescape"))


class _Kind(Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern.  ``text`` is the cleaned pattern without its ``!``."""

    text: str
    exclusion: bool
    kind: _Kind
    regex: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.kind is _Kind.EXACT:
            return path == self.text
        if self.kind is _Kind.PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind is _Kind.SUFFIX:
            suffix = self.text[2:]
            # "**/foo" also matches "foo" itself.
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None

    @property
    def without_trailing_glob(self) -> str:
        """The pattern minus a trailing ``/**`` or ``/*`` (fsutil's dir-skip shortcut)."""
        text = self.text.removesuffix("/**")
        return text.removesuffix("/*")


def _class_to_regex(pattern: str, start: int) -> tuple[str, int]:
    """Translate the ``[...]`` class at ``pattern[start]``; returns (regex, index after ``]``).

    The syntax is ``filepath.Match``'s: an optional ``^``, then one or more characters or
    ``lo-hi`` ranges, ``\\`` escaping; ``-`` and ``]`` must be escaped to be members.
    """
    bad = UsageError(f"invalid .dockerignore pattern {pattern!r}: malformed character class")
    i = start + 1
    out = "["
    if i < len(pattern) and pattern[i] == "^":
        out += "^"
        i += 1

    def char(at: int) -> tuple[str, int]:
        if at >= len(pattern) or pattern[at] in "-]":
            raise bad
        if pattern[at] == "\\":
            at += 1
            if at >= len(pattern):
                raise bad
        # Go insists that something (at least the closing ']') follows each member.
        if at + 1 >= len(pattern):
            raise bad
        return pattern[at], at + 1

    first = True
    while True:
        if not first and i < len(pattern) and pattern[i] == "]":
            return out + "]", i + 1
        first = False
        lo, i = char(i)
        out += re.escape(lo)
        if pattern[i] == "-":
            hi, i = char(i + 1)
            if hi < lo:
                raise bad
            out += "-" + re.escape(hi)
        if i >= len(pattern):
            raise bad


def compile_pattern(raw: str) -> Pattern:
    """Compile one pattern (with an optional leading ``!``) the way patternmatcher does."""
    text = raw.strip()
    exclusion = text.startswith("!")
    if exclusion:
        text = text[1:]
        if not text:
            raise UsageError('invalid .dockerignore pattern "!": an exception needs a pattern')
    text = posixpath.normpath(text) if text else text
    # Paths are relative to the context, so "/a" means "a" (as .dockerignore reading does;
    # patternmatcher itself leaves it to the reader, we accept both spellings everywhere).
    if len(text) > 1 and text.startswith("/"):
        text = text.lstrip("/") or "/"

    regex = "^"
    kind = _Kind.EXACT
    i = 0
    step = 0
    while i < len(text):
        ch = text[i]
        if ch == "*":
            if i + 1 < len(text) and text[i + 1] == "*":
                i += 2
                # "**/" is the same as "**".
                if i < len(text) and text[i] == "/":
                    i += 1
                if i >= len(text):
                    # A trailing "**" matches everything below (as .gitignore does).
                    if kind is _Kind.EXACT:
                        kind = _Kind.PREFIX
                    else:
                        regex += ".*"
                        kind = _Kind.REGEX
                else:
                    # Any number of leading components, including none.
                    regex += "(.*/)?"
                    kind = _Kind.REGEX
                if step == 0:
                    kind = _Kind.SUFFIX
                step += 1
                continue
            regex += "[^/]*"
            kind = _Kind.REGEX
        elif ch == "?":
            regex += "[^/]"
            kind = _Kind.REGEX
        elif ch in _LITERAL_META:
            regex += "\\" + ch
        elif ch == "\\":
            if i + 1 >= len(text):
                raise UsageError(f"invalid .dockerignore pattern {raw!r}: trailing backslash")
            regex += re.escape(text[i + 1])
            kind = _Kind.REGEX
            i += 1
        elif ch == "[":
            cls, i = _class_to_regex(text, i)
            regex += cls
            kind = _Kind.REGEX
            step += 1
            continue
        else:
            regex += re.escape(ch) if ch in "^]" else ch
        i += 1
        step += 1
    compiled = re.compile(regex + "$") if kind is _Kind.REGEX else None
    return Pattern(text=text, exclusion=exclusion, kind=kind, regex=compiled)


# Per-pattern "this path (or a parent) matched" flags, threaded from a directory to its children.
MatchInfo = tuple[bool, ...]


class PatternMatcher:
    """Decides which context paths a list of .dockerignore patterns excludes."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: tuple[Pattern, ...] = tuple(
            compile_pattern(p) for p in patterns if p.strip()
        )
        self.has_exclusions = any(p.exclusion for p in self.patterns)
        # fsutil may skip a directory only when every pattern that could bring something
        # below it back is a plain path (possibly ending in /* or /**); a wildcard one could
        # match anywhere below.  Tracked separately for exceptions and for plain patterns.
        self._plain = {
            flag: not any(
                p.exclusion == flag and _PATTERN_CHARS.intersection(p.without_trailing_glob)
                for p in self.patterns
            )
            for flag in (True, False)
        }

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def excluded(self, relpath: str, *, is_dir: bool = False) -> bool:
        """Whether ``relpath`` (slash-separated, relative to the context) is excluded.

        ``is_dir`` does not change the answer (patterns cannot tell directories from files,
        as in BuildKit); it is taken so callers state what they ask about.  Use
        :meth:`must_descend` to decide whether to walk into an excluded directory.
        """
        del is_dir
        path = posixpath.normpath(relpath)
        if path == ".":
            return False
        parents = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            # An exclusion can only flip a match, an inclusion only a non-match.
            if pattern.exclusion != matched:
                continue
            hit = pattern.match(path) or any(
                pattern.match("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if hit:
                matched = not pattern.exclusion
        return matched

    def match_with_parent(self, relpath: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """Incremental form of :meth:`excluded` for walkers (patternmatcher's
        ``MatchesUsingParentResults``): pass the info returned for the parent directory,
        or None at the top level, and keep the returned info for this path's children."""
        matched = False
        info: list[bool] = []
        for index, pattern in enumerate(self.patterns):
            hit = parent[index] if parent else False
            if not hit:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                hit = pattern.match(relpath)
                if not hit and parent is None and "/" in relpath:
                    parts = relpath.split("/")[:-1]
                    hit = any(pattern.match("/".join(parts[: i + 1])) for i in range(len(parts)))
            info.append(hit)
            if hit:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def must_descend(self, dir_relpath: str) -> bool:
        """Whether an *excluded* directory must still be walked because an exception
        pattern may re-include something below it (fsutil's rule, so that we send exactly
        what BuildKit would ask for)."""
        return self._may_match_below(dir_relpath, exclusion=True)

    def may_include_below(self, dir_relpath: str) -> bool:
        """For *include* patterns: whether a directory that no pattern matched must still be
        walked because a pattern may match something below it."""
        return self._may_match_below(dir_relpath, exclusion=False)

    def _may_match_below(self, dir_relpath: str, *, exclusion: bool) -> bool:
        if not any(p.exclusion == exclusion for p in self.patterns):
            return False
        if not self._plain[exclusion]:
            return True
        prefix = dir_relpath.rstrip("/") + "/"
        return any(
            p.exclusion == exclusion and (p.without_trailing_glob + "/").startswith(prefix)
            for p in self.patterns
        )
