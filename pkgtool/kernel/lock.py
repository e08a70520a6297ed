"""``pkgtool kernel lock``: re-pin kernel.yml to what the Debian mirror serves now.

The mirror moves: a security update replaces the kernel ABI package
(``linux-image-6.1.0-50-amd64`` becomes ``linux-image-6.1.0-57-amd64``) and the old
version disappears from bookworm-security.  Per arch, the lock asks apt for the candidate
of the metapackage ``linux-image-<arch>``, follows its ``Depends:`` to the ABI package
(at the exact version the metapackage names), and takes that record's ``Version`` and
``SHA256``.  The optional ``source`` section gets the candidate ``Version``/``SHA256`` of
its ``linux-source-*`` package.

Versions: the top-level ``version`` (the tag prefix) becomes the version most arches have
(ties: the newest); an arch at another version gets its own ``version:`` line (bookworm
builds security updates for amd64 and arm64 but not s390x, so s390x lags), and loses it
again when it catches up.  With ``--arch`` only those arches are re-pinned and the
top-level version stays.

The file is rewritten in place, atomically, by editing only the characters of the values
that change (positions from the YAML parser), so comments, order and layout stay as the
user wrote them; the result is parsed again and checked before it replaces the file.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.fileio import atomic_write
from pkgtool.kernel import debversion
from pkgtool.kernel.apt import AptCache, AptError, AptRecord
from pkgtool.kernel.kernel_yml import KernelSpec, load_kernel_spec, parse_kernel_spec
from pkgtool.yamlload import format_path, parse_yaml

PathKey = tuple[str, ...]


@dataclass(frozen=True)
class Pin:
    package: str
    version: str
    sha256: str
    size: int = 0


@dataclass(frozen=True)
class Change:
    line: int
    path: PathKey
    old: str  # "" when the key was not there
    new: str  # "" when the key was removed

    def format(self, shown: str) -> str:
        old = self.old or "(unset)"
        new = self.new or "(removed: same as the top-level version)"
        return f"{shown}:{self.line}: {format_path(self.path)}: {old} -> {new}"


@dataclass
class LockResult:
    path: Path
    changes: list[Change]
    written: bool


def resolve_arch(apt: AptCache, arch: str) -> Pin:
    """The ABI kernel package ``linux-image-<arch>`` depends on now, with version and sha256."""
    meta_name = f"linux-image-{arch}"
    meta = apt.candidate(meta_name, arch)
    abi = [(n, v) for n, v in meta.depends_on() if n.startswith("linux-image-") and n.endswith(f"-{arch}")]
    if len(abi) != 1:
        raise AptError(f"{meta_name}:{arch} {meta.version}: expected one linux-image-<abi>-{arch} "
                       f"in Depends, found {', '.join(n for n, _ in abi) or 'none'} ({meta.depends!r})")
    name, exact = abi[0]
    record: AptRecord | None = apt.exact(name, arch, exact) if exact else apt.candidate(name, arch)
    if record is None:
        raise AptError(f"{meta_name}:{arch} {meta.version} depends on {name} (= {exact}), "
                       "which apt does not have; run `apt-get update`")
    return Pin(package=record.package, version=record.version, sha256=record.sha256, size=record.size)


def resolve_source(apt: AptCache, package: str) -> Pin:
    record = apt.candidate(package, "all")
    return Pin(package=record.package, version=record.version, sha256=record.sha256, size=record.size)


def top_version(versions: Sequence[str]) -> str:
    """The version most arches share; the newest of those on a tie."""
    counts = Counter(versions)
    best = max(counts.values())
    return debversion.newest([v for v, n in counts.items() if n == best])


# --------------------------------------------------------------------------- text edits


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _render(value: str, style: str | None) -> str:
    """``value`` as a YAML scalar: plain when it reads back as the same string."""
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style == '"':
        return json.dumps(value)
    try:
        plain_ok = yaml.safe_load(value) == value and "#" not in value and ": " not in value
    except yaml.YAMLError:
        plain_ok = False
    return value if plain_ok else json.dumps(value)


def _mapping(node: yaml.Node, path: PathKey) -> yaml.MappingNode:
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            raise PkgtoolError(f"cannot rewrite {format_path(path)}: not a mapping")
        for k, v in node.value:
            if k.value == key:
                node = v
                break
        else:
            raise PkgtoolError(f"cannot rewrite {format_path(path)}: no key {key!r}")
    if not isinstance(node, yaml.MappingNode):
        raise PkgtoolError(f"cannot rewrite {format_path(path)}: not a mapping")
    return node


class _Editor:
    def __init__(self, text: str) -> None:
        self.text = text
        root = yaml.compose(text)
        if root is None:
            raise PkgtoolError("cannot rewrite an empty file")
        self.root: yaml.Node = root
        self.edits: list[_Edit] = []

    def _pairs(self, mapping: PathKey) -> list[tuple[yaml.Node, yaml.Node]]:
        return list(_mapping(self.root, mapping).value)

    def value(self, mapping: PathKey, key: str) -> str | None:
        for k, v in self._pairs(mapping):
            if k.value == key and isinstance(v, yaml.ScalarNode):
                return str(v.value)
        return None

    def set(self, mapping: PathKey, key: str, value: str) -> None:
        for k, v in self._pairs(mapping):
            if k.value == key:
                if not isinstance(v, yaml.ScalarNode):
                    raise PkgtoolError(f"cannot rewrite {format_path((*mapping, key))}: not a scalar")
                self.edits.append(_Edit(v.start_mark.index, v.end_mark.index, _render(value, v.style)))
                return
        raise PkgtoolError(f"cannot rewrite {format_path((*mapping, key))}: missing")

    def insert_after(self, mapping: PathKey, after: str, key: str, value: str) -> None:
        node = _mapping(self.root, mapping)
        for k, v in node.value:
            if k.value != after:
                continue
            rendered = f"{key}: {_render(value, None)}"
            if node.flow_style:
                self.edits.append(_Edit(v.end_mark.index, v.end_mark.index, f", {rendered}"))
            else:
                eol = self.text.find("\n", v.end_mark.index)
                at = len(self.text) if eol < 0 else eol + 1
                prefix = "" if eol >= 0 else "\n"
                self.edits.append(_Edit(at, at, f"{prefix}{' ' * k.start_mark.column}{rendered}\n"))
            return
        raise PkgtoolError(f"cannot rewrite {format_path(mapping)}: no key {after!r}")

    def delete(self, mapping: PathKey, key: str) -> None:
        node = _mapping(self.root, mapping)
        pairs = list(node.value)
        for i, (k, v) in enumerate(pairs):
            if k.value != key:
                continue
            if node.flow_style:
                if i > 0:
                    start, end = pairs[i - 1][1].end_mark.index, v.end_mark.index
                elif i + 1 < len(pairs):
                    start, end = k.start_mark.index, pairs[i + 1][0].start_mark.index
                else:
                    raise PkgtoolError(f"cannot remove the only key of {format_path(mapping)}")
                self.edits.append(_Edit(start, end, ""))
                return
            line_start = self.text.rfind("\n", 0, k.start_mark.index) + 1
            eol = self.text.find("\n", v.end_mark.index)
            line_end = len(self.text) if eol < 0 else eol + 1
            before = self.text[line_start:k.start_mark.index]
            after = self.text[v.end_mark.index:line_end].strip()
            if before.strip() or (after and not after.startswith("#")):
                raise PkgtoolError(f"cannot remove {format_path((*mapping, key))}: it shares its line with other keys")
            self.edits.append(_Edit(line_start, line_end, ""))
            return

    def line_of(self, path: PathKey) -> int:
        node = _mapping(self.root, path[:-1])
        for k, _v in node.value:
            if k.value == path[-1]:
                return int(k.start_mark.line) + 1
        return 0

    def result(self) -> str:
        out = self.text
        for edit in sorted(self.edits, key=lambda e: (e.start, e.end), reverse=True):
            out = out[:edit.start] + edit.text + out[edit.end:]
        return out


# --------------------------------------------------------------------------- lock


def plan_lock(spec: KernelSpec, text: str, *, resolved: dict[str, Pin], source: Pin | None,
              keep_top_version: bool) -> tuple[str, list[Change]]:
    """The new file text and the changes, for pins already resolved."""
    try:
        editor = _Editor(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{spec.path}: invalid YAML: {exc}") from None
    changes: list[tuple[str, PathKey, str, str]] = []  # kind, path, old, new

    old_top = spec.version
    versions = {a.arch: (resolved[a.arch].version if a.arch in resolved else a.version) for a in spec.arches}
    new_top = old_top if keep_top_version else top_version(list(versions.values()))
    if new_top != old_top:
        editor.set((), "version", new_top)
        changes.append(("set", ("version",), old_top, new_top))
    for entry in spec.arches:
        where: PathKey = ("arches", entry.arch)
        pin = resolved.get(entry.arch)
        new_version = versions[entry.arch]
        if pin is not None:
            for key, old, new in (("package", entry.package, pin.package), ("sha256", entry.sha256, pin.sha256)):
                if old != new:
                    editor.set(where, key, new)
                    changes.append(("set", (*where, key), old, new))
        if new_version != new_top:
            if not entry.own_version:
                editor.insert_after(where, "package", "version", new_version)
                changes.append(("set", (*where, "version"), "", new_version))
            elif entry.version != new_version:
                editor.set(where, "version", new_version)
                changes.append(("set", (*where, "version"), entry.version, new_version))
        elif entry.own_version:
            old_line = editor.line_of((*where, "version"))
            editor.delete(where, "version")
            changes.append((f"removed:{old_line}", (*where, "version"), entry.version, ""))
    if source is not None and spec.source is not None:
        for key, old, new in (("version", spec.source.version, source.version),
                              ("sha256", spec.source.sha256, source.sha256)):
            if old != new:
                editor.set(("source",), key, new)
                changes.append(("set", ("source", key), old, new))

    new_text = editor.result()
    _check_rewrite(spec, new_text, resolved=resolved, source=source, top=new_top, versions=versions)
    doc = parse_yaml(new_text, str(spec.path))
    out = []
    for kind, path, old, new in changes:
        line = int(kind.split(":")[1]) if kind.startswith("removed:") else int(doc.where(path).rsplit(":", 1)[1])
        out.append(Change(line=line, path=path, old=old, new=new))
    return new_text, sorted(out, key=lambda c: c.line)


def _check_rewrite(spec: KernelSpec, text: str, *, resolved: dict[str, Pin], source: Pin | None,
                   top: str, versions: dict[str, str]) -> None:
    """Parse the rewritten text and insist it says exactly what was resolved."""
    try:
        new = parse_kernel_spec(text, spec.path)
    except UsageError as exc:
        raise PkgtoolError(f"{spec.path}: the rewritten file does not parse ({exc}); nothing was written") from None
    problems = []
    if new.version != top:
        problems.append(f"version {new.version} != {top}")
    for entry in new.arches:
        if entry.version != versions[entry.arch]:
            problems.append(f"{entry.arch} version {entry.version} != {versions[entry.arch]}")
        pin = resolved.get(entry.arch)
        if pin is not None and (entry.package, entry.sha256) != (pin.package, pin.sha256):
            problems.append(f"{entry.arch} pin differs")
    if source is not None and new.source is not None and (new.source.version, new.source.sha256) != (source.version, source.sha256):
        problems.append("source pin differs")
    if problems:
        raise PkgtoolError(f"{spec.path}: cannot rewrite the file safely ({'; '.join(problems)}); edit it by hand")


def lock_kernel(path: Path, *, apt: AptCache | None = None, arches: Sequence[str] = (),
                check: bool = False, update: bool = False) -> LockResult:
    """Resolve every (or each given) arch and the source, and rewrite ``path`` if anything moved."""
    spec = load_kernel_spec(path)
    apt = apt or AptCache()
    have = [a.arch for a in spec.arches]
    for arch in arches:
        if arch not in have:
            raise UsageError(f"{path}: --arch {arch}: not in this kernel.yml (it has {', '.join(have)})")
    if update:
        apt.update()
    wanted = [a for a in have if not arches or a in arches]
    resolved = {arch: resolve_arch(apt, arch) for arch in wanted}
    source = resolve_source(apt, spec.source.package) if spec.source is not None else None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    new_text, changes = plan_lock(spec, text, resolved=resolved, source=source, keep_top_version=bool(arches))
    written = False
    if changes and not check:
        atomic_write(path, new_text.encode("utf-8"))
        written = True
    return LockResult(path=path, changes=changes, written=written)
