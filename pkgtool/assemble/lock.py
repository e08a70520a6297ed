"""``pkgtool image lock``: pin every image reference of a YAML to its digest, in place.

The rewrite is line-based so comments, quoting and layout survive: each reference is
located through the parser's line marks and replaced on that line only, as
``name:tag@sha256:…`` (the tag stays for readers; the digest is what pulls use).  The new
file is written to a temp file and renamed over the old one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkgtool.fileio import replace_on_lines
from pkgtool.yamlload import PathKey, YamlDoc, load_yaml

Resolver = Callable[[str], str]  # reference -> sha256 digest of its manifest or index


@dataclass(frozen=True)
class Reference:
    path: PathKey
    ref: str
    line: int

    @property
    def pinned(self) -> bool:
        return "@sha256:" in self.ref


def references(doc: YamlDoc) -> Iterator[Reference]:
    """Image references of one document, with the line each is on."""
    data: Any = doc.data if isinstance(doc.data, dict) else {}

    def item(path: PathKey, value: Any) -> Iterator[Reference]:
        if isinstance(value, str) and value:
            # For a mapping key the mark is the key's line, which is the value's line too
            # in block style (`image: ref`); a list item's mark is its own line.
            yield Reference(path, value, doc.lines.get(path, 0))

    kernel = data.get("kernel")
    if isinstance(kernel, dict):
        yield from item(("kernel", "image"), kernel.get("image"))
    for i, value in enumerate(data.get("init") or []):
        yield from item(("init", i), value)
    for section in ("onboot", "onshutdown", "services", "volumes"):
        for i, entry in enumerate(data.get(section) or []):
            if isinstance(entry, dict):
                yield from item((section, i, "image"), entry.get("image"))


def unpinned(path: Path) -> list[Reference]:
    return [r for r in references(load_yaml(path)) if not r.pinned]


def lock_file(path: Path, resolve: Resolver) -> list[tuple[str, str]]:
    """Pin the references of ``path``; returns (old, new) for each change."""
    doc = load_yaml(path)
    edits: list[tuple[int, str, str]] = []
    for ref in references(doc):
        if not ref.pinned:
            edits.append((ref.line, ref.ref, f"{ref.ref}@{resolve(ref.ref)}"))
    if edits:
        replace_on_lines(path, edits)
    changes = [(old, new) for _line, old, new in edits]
    return changes
