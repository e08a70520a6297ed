"""Image references in a repository's Dockerfiles and image YAMLs, located to the line.

Dockerfiles are read line by line, the way the builder reads instructions: ``FROM IMAGE``,
and the ``--from=IMAGE`` of ``COPY``/``ADD`` and the ``from=IMAGE`` of ``RUN --mount``.
A registry prefix that is a build arg (``${PKGTOOL_REGISTRY}/pkgtool/base:…``) is kept as
written.  Stage names and ``scratch`` are not references.

Image YAMLs are the ``*.yml`` files under ``examples/`` (and any other directory given);
their references come from :func:`pkgtool.assemble.lock.references`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pkgtool.assemble.lock import references as yaml_references
from pkgtool.yamlload import load_yaml

_DIGEST = r"sha256:[a-f0-9]{64}"
# [PREFIX/]NAME[:TAG][@DIGEST], PREFIX a host[:port] or a ${VAR}/$VAR.
_REF_RE = re.compile(
    r"^(?P<prefix>(?:\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*|[A-Za-z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<name>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    rf"(?:@(?P<digest>{_DIGEST}))?$"
)


@dataclass(frozen=True)
class Ref:
    """One reference as written, and where."""

    file: Path
    line: int
    text: str
    prefix: str  # "127.0.0.1:5000/", "${PKGTOOL_REGISTRY}/" or ""
    repository: str  # ORG/IMAGE
    tag: str | None
    digest: str | None

    def where(self, root: Path) -> str:
        try:
            shown = self.file.relative_to(root).as_posix()
        except ValueError:
            shown = str(self.file)
        return f"{shown}:{self.line}"

    def with_pin(self, tag: str, digest: str) -> str:
        return f"{self.prefix}{self.repository}:{tag}@{digest}"


def parse_ref(text: str, *, file: Path, line: int) -> Ref | None:
    """A :class:`Ref`, or None for what is not an image name (a stage, ``scratch``)."""
    match = _REF_RE.match(text)
    if match is None:
        return None
    prefix, name = match.group("prefix") or "", match.group("name")
    if prefix and not (prefix.startswith("$") or "." in prefix or ":" in prefix or prefix == "localhost/"):
        # `org/image`: the first component is part of the name, not a registry.
        name, prefix = prefix + name, ""
    return Ref(file=file, line=line, text=text, prefix=prefix, repository=name,
               tag=match.group("tag"), digest=match.group("digest"))


def dockerfile_refs(path: Path) -> list[Ref]:
    """The image references of one Dockerfile (not stage names, not scratch)."""
    refs: list[Ref] = []
    stages: set[str] = set()
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        words = raw.split()
        if not words:
            continue
        instruction = words[0].upper()
        candidates: list[str] = []
        if instruction == "FROM":
            positional = [w for w in words[1:] if not w.startswith("--")]
            if positional:
                candidates.append(positional[0])
                if len(positional) >= 3 and positional[1].lower() == "as":
                    stages.add(positional[2].lower())
        elif instruction in ("COPY", "ADD", "RUN"):
            for word in words[1:]:
                if not word.startswith("--"):
                    break
                if word.startswith("--from="):
                    candidates.append(word.removeprefix("--from="))
                elif word.startswith("--mount="):
                    candidates += [o.removeprefix("from=") for o in word.removeprefix("--mount=").split(",") if o.startswith("from=")]
        for candidate in candidates:
            if candidate.lower() == "scratch" or candidate.lower() in stages or candidate.isdigit():
                continue
            ref = parse_ref(candidate, file=path, line=number)
            if ref is not None:
                refs.append(ref)
    return refs


def image_yaml_files(root: Path, directories: tuple[str, ...] = ("examples",)) -> list[Path]:
    files: list[Path] = []
    for name in directories:
        top = root / name
        if not top.is_dir():
            continue
        for current, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [Path(current) / n for n in sorted(names) if n.endswith((".yml", ".yaml"))]
    return sorted(files)


def yaml_refs(path: Path) -> list[Ref]:
    out = []
    for found in yaml_references(load_yaml(path)):
        ref = parse_ref(found.ref, file=path, line=found.line)
        if ref is not None:
            out.append(ref)
    return out


def rewrite(path: Path, changes: list[tuple[Ref, str]]) -> None:
    """Replace each reference's text on its line, atomically, keeping the rest of the file."""
    from pkgtool.fileio import replace_on_lines

    replace_on_lines(path, [(ref.line, ref.text, new) for ref, new in changes])
