"""The content hash that names a package build (``ORG/IMAGE:<hash>``).

It changes whenever an input that can change the built image changes, and only then.

Algorithm (version ``pkgtool-content-hash/v1``).  The hash is the first 40 hex digits of
the SHA-256 of a stream of records.  Each record is one compact JSON array (sorted keys,
ASCII escapes, so every path, even one that is not UTF-8, has one spelling) followed by
``\\n``.  The records, in this order:

1. ``["version", "pkgtool-content-hash/v1"]``
2. ``["spec", DATA]``: the effective build.yml, i.e. ``PackageSpec.to_data()``: every field
   with defaults filled in, so an ``extra-sources`` or ``buildArgs`` change counts even where
   the file's bytes do not.  It holds no absolute path.  (The build.yml *file* is also in
   the build context, where ``COPY . /`` would pick it up, so its bytes count as a context
   file (step 7) unless .dockerignore leaves it out; then only its meaning counts, not
   comments or formatting.)
3. ``["build-args", {K: V}]``: build.yml's ``buildArgs`` with command-line overrides on top.
4. ``["arches", [..]]``: the target arches of the tag.  Pass build.yml's arches, not a
   ``--platforms`` subset, so machines building different arches agree on the tag.
5. ``["deps", [[NAME, TAG], ..]]``: tags of the packages this one depends on, sorted by
   name.  A changed base package therefore re-tags everything built on it.
6. ``["dockerfile", PATH, SHA256]`` and ``["dockerignore", SHA256 | null]``: always, even
   when .dockerignore excludes them (BuildKit still reads both).
7. For the package directory (``DST`` = ``"."``), then each ``extra-sources`` entry in
   build.yml order: ``["tree", DST]``, followed by one record per path of the build context
   it contributes, in fsutil's walk order (:mod:`pkgtool.fswalk`), with ``.dockerignore``
   applied as BuildKit applies it (extra sources are matched at their path in the context):

   * directory: ``["d", PATH]``
   * regular file: ``["f", PATH, EXEC, SIZE, SHA256]`` where ``EXEC`` is the owner's
     execute bit (git's rule: 0644 vs 0755, nothing else of the mode);
   * symlink: ``["l", PATH, TARGET]`` (not followed);
   * anything else: ``["o", PATH, KIND]`` with ``KIND`` one of ``fifo``, ``socket``,
     ``char MAJ:MIN``, ``block MAJ:MIN``.

   ``PATH`` is relative to the tree (``/``-separated).  Hardlinks are hashed as the files
   they are.

Not inputs: mtimes, owners, permission bits other than the execute bit, the machine, the
checkout path, git state (a dirty work tree only adds a ``-dirty`` *suffix*, see
:mod:`pkgtool.gitstate`).

Speed: files are read in large chunks and hashed on a small thread pool (hashlib releases
the GIL).  A stat cache maps (path, size, mtime_ns, ctime_ns, inode, device) to a file's
SHA-256, so an unchanged tree hashes from metadata alone.  It never changes a result: an
entry is only written when the file's stat is the same before and after reading it and its
timestamps are at least two seconds in the past (a write in the same clock tick could
otherwise go unnoticed, git's "racy clean" problem), and every write is atomic.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import stat as statmod
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkgtool import fswalk
from pkgtool.dockerignore import PatternMatcher, read_dockerignore
from pkgtool.errors import PkgtoolError
from pkgtool.fileio import atomic_write
from pkgtool.spec.package import PackageSpec, merge_build_args

VERSION = "pkgtool-content-hash/v1"
HASH_LENGTH = 40
# Below this a file is read in one call; above, streamed in _CHUNK pieces.
_SMALL = 1 << 20
_CHUNK = 1 << 20
# Work is handed to threads in batches: one future per small file costs more than hashing it.
_BATCH_BYTES = 8 << 20
_BATCH_FILES = 256
_RACY_SECONDS = 2.0
_CACHE_FORMAT = 1


def _record(*fields: Any) -> bytes:
    return json.dumps(list(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


@dataclass(frozen=True)
class _Source:
    """One tree of the build context: walked from ``root``, placed at ``dst``."""

    dst: str
    root: Path
    single_file: bool = False


# --------------------------------------------------------------------------- stat cache

_Key = tuple[int, int, int, int, int]


def _stat_key(st: os.stat_result) -> _Key:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class StatCache:
    """Per-tree file digests keyed by stat; a miss just means hashing the file."""

    def __init__(self, directory: Path | None, tree: Path) -> None:
        self.path = None
        if directory is not None:
            name = hashlib.sha256(os.fsencode(str(tree.resolve()))).hexdigest()[:32]
            self.path = directory / f"{name}.json"
        self.old: dict[str, list[Any]] = {}
        self.new: dict[str, list[Any]] = {}
        self.changed = False
        if self.path is not None:
            try:
                data = json.loads(self.path.read_bytes())
                if data.get("format") == _CACHE_FORMAT and isinstance(data.get("entries"), dict):
                    self.old = data["entries"]
            except (OSError, ValueError, AttributeError):
                self.old = {}  # missing or unreadable: start afresh

    def get(self, relpath: str, st: os.stat_result) -> str | None:
        hit = self.old.get(relpath)
        if isinstance(hit, list) and len(hit) == 6 and tuple(hit[:5]) == _stat_key(st):
            self.new[relpath] = hit
            return str(hit[5])
        return None

    def put(self, relpath: str, st: os.stat_result, digest: str, *, now: float) -> None:
        newest = max(st.st_mtime_ns, st.st_ctime_ns) / 1e9
        if newest > now - _RACY_SECONDS:
            return
        self.new[relpath] = [*_stat_key(st), digest]
        self.changed = True

    def save(self) -> None:
        if self.path is None or not (self.changed or len(self.new) != len(self.old)):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps({"format": _CACHE_FORMAT, "entries": self.new}, separators=(",", ":")).encode()
            atomic_write(self.path, data, mode=0o644)
        except OSError:
            # The cache is an optimisation: failing to write it must not fail the hash.
            pass


# --------------------------------------------------------------------------- file digests

def file_sha256(path: Path, expected: os.stat_result | None = None) -> tuple[str, bool]:
    """(hex SHA-256 of the file, whether its stat still equals ``expected`` after reading)."""
    try:
        with open(path, "rb", buffering=0) as f:
            size = expected.st_size if expected is not None else _SMALL + 1
            if size <= _SMALL:
                h = hashlib.sha256(f.read())
                # A file that grew past its size since the walk: hash all of it.
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
            else:
                h = hashlib.file_digest(f, "sha256")
            after = os.fstat(f.fileno())
    except OSError as exc:
        raise PkgtoolError(f"{path}: cannot read: {exc.strerror or exc}") from None
    stable = expected is not None and _stat_key(after) == _stat_key(expected)
    return h.hexdigest(), stable


def _hash_batch(batch: Sequence[fswalk.Entry]) -> list[tuple[str, bool]]:
    return [file_sha256(e.abspath, e.stat) for e in batch]


def _batches(entries: Sequence[fswalk.Entry]) -> Iterator[list[fswalk.Entry]]:
    batch: list[fswalk.Entry] = []
    size = 0
    for entry in entries:
        batch.append(entry)
        size += entry.stat.st_size
        if size >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def digest_files(entries: Sequence[fswalk.Entry], *, cache: StatCache, workers: int | None = None) -> dict[str, str]:
    """relpath -> SHA-256 for regular files, from the cache where its stat still matches."""
    now = time.time()
    out: dict[str, str] = {}
    todo: list[fswalk.Entry] = []
    for entry in entries:
        hit = cache.get(entry.relpath, entry.stat)
        if hit is not None:
            out[entry.relpath] = hit
        else:
            todo.append(entry)
    if not todo:
        return out
    batches = list(_batches(todo))
    if len(batches) == 1:
        results = [_hash_batch(batches[0])]
    else:
        count = workers or min(8, (os.cpu_count() or 1) * 2)
        with concurrent.futures.ThreadPoolExecutor(max_workers=count, thread_name_prefix="hash") as pool:
            results = list(pool.map(_hash_batch, batches))
    for batch, digests in zip(batches, results, strict=True):
        for entry, (digest, stable) in zip(batch, digests, strict=True):
            out[entry.relpath] = digest
            if stable:
                cache.put(entry.relpath, entry.stat, digest, now=now)
    return out


# --------------------------------------------------------------------------- records

def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if statmod.S_ISFIFO(mode):
        return "fifo"
    if statmod.S_ISSOCK(mode):
        return "socket"
    if statmod.S_ISCHR(mode):
        return f"char {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if statmod.S_ISBLK(mode):
        return f"block {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    return f"mode {statmod.S_IFMT(mode):o}"


def _context_path(dst: str, relpath: str) -> str:
    return relpath if dst == "." else f"{dst}/{relpath}" if relpath else dst


def _tree_entries(source: _Source, patterns: Sequence[str], matcher: PatternMatcher) -> list[tuple[str, fswalk.Entry]]:
    """(path in the tree, entry) for what the build context gets from ``source``."""
    if source.single_file:
        st = os.lstat(source.root)
        link = os.readlink(source.root) if statmod.S_ISLNK(st.st_mode) else None
        if matcher and matcher.excluded(source.dst):
            return []
        return [("", fswalk.Entry(source.root.name, st, link, source.root))]
    if source.dst == ".":
        return [(e.relpath, e) for e in fswalk.walk(source.root, excludes=patterns)]
    entries = []
    for entry in fswalk.walk(source.root):
        if matcher and matcher.excluded(_context_path(source.dst, entry.relpath), is_dir=entry.is_dir):
            continue
        entries.append((entry.relpath, entry))
    return entries


def _sources(spec: PackageSpec) -> list[_Source]:
    out = [_Source(".", spec.dir)]
    for extra in spec.extra_sources:
        out.append(_Source(extra.dst, extra.path, single_file=not extra.path.is_dir()))
    return out


def content_hash(
    spec: PackageSpec,
    *,
    dep_tags: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
    arches: Sequence[str] | None = None,
    stat_cache_dir: Path | None = None,
    workers: int | None = None,
) -> str:
    """The package's content hash (40 hex digits); see the module docstring.

    ``build_args`` are command-line overrides on top of build.yml's; ``arches`` defaults to
    build.yml's; ``stat_cache_dir`` (None: no cache) holds the stat cache.
    """
    h = hashlib.sha256()
    h.update(_record("version", VERSION))
    h.update(_record("spec", spec.to_data()))
    h.update(_record("build-args", merge_build_args(spec, build_args)))
    h.update(_record("arches", list(arches if arches is not None else spec.arches)))
    h.update(_record("deps", sorted([k, v] for k, v in (dep_tags or {}).items())))
    dockerfile_digest, _ = file_sha256(spec.dockerfile_path)
    h.update(_record("dockerfile", spec.dockerfile, dockerfile_digest))
    ignore_path = spec.dir / ".dockerignore"
    h.update(_record("dockerignore", file_sha256(ignore_path)[0] if ignore_path.is_file() else None))
    patterns = read_dockerignore(spec.dir)
    try:
        matcher = PatternMatcher(patterns)
    except PkgtoolError as exc:
        raise PkgtoolError(f"{ignore_path}: {exc}") from None
    for source in _sources(spec):
        h.update(_record("tree", source.dst))
        entries = _tree_entries(source, patterns, matcher)
        cache = StatCache(stat_cache_dir, source.root)
        files = [e for _, e in entries if statmod.S_ISREG(e.stat.st_mode)]
        digests = digest_files(files, cache=cache, workers=workers)
        for path, entry in entries:
            h.update(_entry_record(path, entry, digests))
        cache.save()
    return h.hexdigest()[:HASH_LENGTH]


def _entry_record(path: str, entry: fswalk.Entry, digests: Mapping[str, str]) -> bytes:
    st = entry.stat
    if statmod.S_ISDIR(st.st_mode):
        return _record("d", path)
    if statmod.S_ISREG(st.st_mode):
        return _record("f", path, bool(st.st_mode & statmod.S_IXUSR), st.st_size, digests[entry.relpath])
    if statmod.S_ISLNK(st.st_mode):
        return _record("l", path, entry.link_target)
    return _record("o", path, _kind(st))


def context_files(spec: PackageSpec, *, repo_root: Path, stat_cache_dir: Path | None = None) -> dict[str, str]:
    """The regular files the build context gets, as (path relative to ``repo_root``) ->
    SHA-256 hex: the materials of a build's in-toto link and provenance.  The same walk and
    .dockerignore rules as :func:`content_hash`, and the same stat cache."""
    patterns = read_dockerignore(spec.dir)
    matcher = PatternMatcher(patterns)
    out: dict[str, str] = {}
    for source in _sources(spec):
        entries = _tree_entries(source, patterns, matcher)
        cache = StatCache(stat_cache_dir, source.root)
        files = [e for _, e in entries if statmod.S_ISREG(e.stat.st_mode)]
        digests = digest_files(files, cache=cache)
        for _path, entry in entries:
            if statmod.S_ISREG(entry.stat.st_mode):
                try:
                    shown = entry.abspath.resolve().relative_to(repo_root.resolve()).as_posix()
                except ValueError:
                    shown = entry.abspath.as_posix()
                out[shown] = digests[entry.relpath]
        cache.save()
    return dict(sorted(out.items()))
