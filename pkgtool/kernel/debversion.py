"""Debian version ordering (deb-version(7)), for picking the newest of several versions."""

from __future__ import annotations

import functools
import re

_EPOCH_RE = re.compile(r"^(\d+):")


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (lexical, ~ first) and digit runs (numeric)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch = 0
    match = _EPOCH_RE.match(version)
    if match:
        epoch = int(match.group(1))
        version = version[match.end():]
    upstream, sep, revision = version.rpartition("-")
    if not sep:
        return epoch, version, ""
    return epoch, upstream, revision


def compare(a: str, b: str) -> int:
    """<0, 0 or >0 as ``a`` sorts before, with or after ``b`` (like ``dpkg --compare-versions``)."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


def newest(versions: list[str]) -> str:
    return max(versions, key=functools.cmp_to_key(compare))
