"""Reproducible layer tars and their deterministic compression.

A builder's layer tar carries noise that changes on every build while the file system it
describes stays the same: entry order (directory walk order), mtimes of files the build
touched, owner *names* from the build host, pax ``atime``/``ctime`` records, and a gzip
header with a wall-clock time.  :func:`normalize_layer` rewrites a layer so that only the
meaning is left, and :class:`~pkgtool.oci.compress.DeterministicCompressor` compresses it with fixed parameters,
so that equal file systems give equal layer digests.

The normalized tar:

* **Order**: entries sorted by path *component-wise* (bytewise within a component), so
  parents come before children and ``a``, ``a/x``, ``a-b`` sort depth-first the way
  BuildKit walks trees.  Whiteouts (``.wh.NAME``) and opaque markers (``.wh..wh..opq``)
  are ordinary entries here: the image spec makes them apply to *lower* layers only, so
  their position inside a layer carries no meaning and sorting them is safe.
* **Paths**: relative, ``./`` prefixes and empty components removed; absolute paths and
  ``..`` components are refused (:class:`LayerError`).  The root entry itself is dropped:
  runtimes never apply it.  If a path occurs twice, the later entry wins (tar semantics).
* **Metadata**: mtime clamped to ``[0, SOURCE_DATE_EPOCH]`` (newer entries get the epoch,
  older ones keep theirs: they came from the inputs); numeric uid/gid kept, user and
  group *names* dropped (they come from the build host's passwd); permission bits incl.
  setuid/setgid/sticky kept; device numbers kept for device nodes.
* **Pax records**: only extended attributes survive (``SCHILY.xattr.*``, with
  libarchive's ``LIBARCHIVE.xattr.*`` converted), sorted by name, because capabilities
  such as ``security.capability`` change what a binary may do.  Path, linkpath and size
  records are re-created by the writer when a value needs them; atime/ctime/mtime
  records, comments and host-specific records are dropped.
* **Hard links**: a link group's data is held by the member that sorts *first* and every
  other member (including the original target) becomes a link to it, with the holder's
  metadata, so extractors always see the target before the link whatever order the
  builder used.  A link to a path outside the layer is refused.
* **Format**: POSIX.1-2001 pax (``tarfile.PAX_FORMAT``).  GNU format cannot carry
  extended attributes in Python's writer and encodes long names in non-standard
  ``././@LongLink`` entries; pax is what the OCI image spec and Docker/BuildKit emit.
  Python names its pax headers ``././@PaxHeader`` with mode 0 and mtime 0, so the
  headers are stable too.

Compression of the result is :mod:`pkgtool.oci.compress`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import tarfile
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pkgtool.errors import PkgtoolError
from pkgtool.oci.compress import HashingWriter, Writable
from pkgtool.oci.layer import (
    DEFAULT_LIMITS,
    LayerError,
    LayerLimits,
    bounded_tarinfo,
    clean_path,
    decompressed_chunks,
    finite_mtime,
    peek,
    sniff,
)

TAR_FORMAT = tarfile.PAX_FORMAT
_CHUNK = 1024 * 1024

_XATTR_PREFIX = "SCHILY.xattr."
_LIBARCHIVE_XATTR_PREFIX = "LIBARCHIVE.xattr."
_MAX_LINK_HOPS = 64


@dataclass(frozen=True)
class NormalizedLayer:
    diff_id: str  # sha256 of the normalized, uncompressed tar
    size: int  # bytes of the normalized, uncompressed tar
    entries: int  # 0 means the layer changes nothing


@contextlib.contextmanager
def _random_access(src: IO[bytes], *, what: str, limits: LayerLimits, spool_dir: Path | None,
                   expect_diff_id: str | None) -> Iterator[IO[bytes]]:
    """A seekable, uncompressed view of the layer tar in ``src``.

    A seekable plain tar is used in place; anything else (compressed, or a pipe) is
    spooled to a temp file, because sorting needs to read entries out of order.  If
    ``expect_diff_id`` is given the uncompressed input must hash to it.
    """
    head, stream = peek(src, 4)
    if sniff(head) == "none" and stream.seekable():
        start = stream.tell()
        if expect_diff_id is not None:
            sha = hashlib.sha256()
            for chunk in decompressed_chunks(stream, what=what, limits=limits):
                sha.update(chunk)
            _check_diff_id(sha, expect_diff_id, what)
            stream.seek(start)
        yield stream
        return
    with tempfile.TemporaryFile(dir=spool_dir, prefix=".pkgtool-tmp-layer-") as spool:
        sha = hashlib.sha256()
        for chunk in decompressed_chunks(stream, what=what, limits=limits):
            sha.update(chunk)
            spool.write(chunk)
        if expect_diff_id is not None:
            _check_diff_id(sha, expect_diff_id, what)
        spool.seek(0)
        yield spool


def _check_diff_id(sha: Any, expected: str, what: str) -> None:
    if "sha256:" + sha.hexdigest() != expected:
        raise LayerError(f"{what}: content hashes to sha256:{sha.hexdigest()}, not its diff_id {expected}")


# --------------------------------------------------------------------------- normalizing


@dataclass
class _Entry:
    path: str
    key: tuple[bytes, ...]
    info: tarfile.TarInfo  # the source header (data, metadata)
    kind: bytes  # normalized tar type
    link_target: str = ""  # hardlinks: the normalized path linked to


_KINDS = {
    tarfile.REGTYPE: tarfile.REGTYPE,
    tarfile.AREGTYPE: tarfile.REGTYPE,
    tarfile.CONTTYPE: tarfile.REGTYPE,
    tarfile.GNUTYPE_SPARSE: tarfile.REGTYPE,  # tarfile expands sparse data on read
    tarfile.DIRTYPE: tarfile.DIRTYPE,
    tarfile.SYMTYPE: tarfile.SYMTYPE,
    tarfile.LNKTYPE: tarfile.LNKTYPE,
    tarfile.CHRTYPE: tarfile.CHRTYPE,
    tarfile.BLKTYPE: tarfile.BLKTYPE,
    tarfile.FIFOTYPE: tarfile.FIFOTYPE,
}


def _sort_key(path: str) -> tuple[bytes, ...]:
    return tuple(path.encode("utf-8", "surrogateescape").split(b"/"))


def _xattrs(info: tarfile.TarInfo, *, what: str, limits: LayerLimits) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in info.pax_headers.items():
        if key.startswith(_XATTR_PREFIX) and len(key) > len(_XATTR_PREFIX):
            found[key] = value
        elif key.startswith(_LIBARCHIVE_XATTR_PREFIX) and len(key) > len(_LIBARCHIVE_XATTR_PREFIX):
            # libarchive (bsdtar) URL-encodes the name and base64-encodes the value.
            name = urllib.parse.unquote(key[len(_LIBARCHIVE_XATTR_PREFIX):], errors="surrogateescape")
            try:
                raw = base64.b64decode(value, validate=True)
            except ValueError:
                raise LayerError(f"{what}: malformed {key} record on {info.name!r}") from None
            found.setdefault(_XATTR_PREFIX + name, raw.decode("utf-8", "surrogateescape"))
    total = sum(len(k) + len(v) for k, v in found.items())
    if total > limits.max_xattr_bytes:
        raise LayerError(f"{what}: {info.name!r} has {total} bytes of extended attributes "
                         f"(limit {limits.max_xattr_bytes})")
    return dict(sorted(found.items()))


def _read_entries(archive: tarfile.TarFile, *, what: str, limits: LayerLimits) -> dict[str, _Entry]:
    entries: dict[str, _Entry] = {}
    count = 0
    while True:
        try:
            info = archive.next()
        except tarfile.TarError as exc:
            raise LayerError(f"{what}: not a valid tar ({exc})") from None
        if info is None:
            return entries
        count += 1
        if count > limits.max_entries:
            raise LayerError(f"{what}: more than {limits.max_entries} entries")
        kind = _KINDS.get(info.type)
        if kind is None:
            raise LayerError(f"{what}: unsupported tar entry type {info.type!r} for {info.name!r}")
        path = clean_path(info.name, what=what, limits=limits)
        if not path:
            continue  # the root directory: never applied by runtimes
        entry = _Entry(path=path, key=_sort_key(path), info=info, kind=kind)
        if kind == tarfile.LNKTYPE:
            entry.link_target = clean_path(info.linkname, what=what, limits=limits)
            if not entry.link_target:
                raise LayerError(f"{what}: hard link {info.name!r} to the root directory")
        elif kind == tarfile.SYMTYPE and len(info.linkname.encode("utf-8", "surrogateescape")) > limits.max_path_bytes:
            raise LayerError(f"{what}: symlink target longer than {limits.max_path_bytes} bytes")
        # Later entries replace earlier ones with the same path, as on extraction.
        entries.pop(path, None)
        entries[path] = entry


def _link_groups(entries: dict[str, _Entry], what: str) -> dict[str, str]:
    """Map every member of a hard-link group to the path that holds the group's data.

    The holder is the member that sorts first, and it takes the original target's header
    (type, data, metadata): links share the inode, so the target's metadata is the truth.
    """
    groups: dict[str, list[str]] = {}
    for entry in entries.values():
        if entry.kind != tarfile.LNKTYPE:
            continue
        target = entry.link_target
        for _ in range(_MAX_LINK_HOPS):
            found = entries.get(target)
            if found is None:
                raise LayerError(f"{what}: hard link {entry.path!r} points to {target!r}, "
                                 "which is not in the layer")
            if found.kind != tarfile.LNKTYPE:
                break
            target = found.link_target
        else:
            raise LayerError(f"{what}: hard link loop at {entry.path!r}")
        if entries[target].kind == tarfile.DIRTYPE:
            raise LayerError(f"{what}: hard link {entry.path!r} points to directory {target!r}")
        groups.setdefault(target, [target]).append(entry.path)
    holders: dict[str, str] = {}
    for target, members in groups.items():
        holder = min(members, key=_sort_key)
        for member in members:
            holders[member] = holder
        # The holder becomes the data entry with the original target's header.
        entries[holder] = _Entry(path=holder, key=entries[holder].key, info=entries[target].info,
                                 kind=entries[target].kind)
    return holders


def _header(entry: _Entry, *, epoch: int, what: str, limits: LayerLimits) -> tarfile.TarInfo:
    src = entry.info
    out = tarfile.TarInfo(entry.path)
    out.type = entry.kind
    out.mode = src.mode & 0o7777
    out.uid, out.gid = src.uid, src.gid
    out.uname = out.gname = ""
    out.mtime = max(0, min(finite_mtime(src.mtime), epoch))
    out.pax_headers = _xattrs(src, what=what, limits=limits)
    if entry.kind == tarfile.REGTYPE:
        out.size = src.size
    elif entry.kind == tarfile.SYMTYPE:
        out.linkname = src.linkname
    elif entry.kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        out.devmajor, out.devminor = src.devmajor, src.devminor
    return out


def normalize_layer(src: IO[bytes], dst: Writable, *, source_date_epoch: int, what: str = "layer",
                    limits: LayerLimits = DEFAULT_LIMITS, spool_dir: Path | None = None,
                    expect_diff_id: str | None = None) -> NormalizedLayer:
    """Write the normalized form of the layer tar ``src`` (plain, gzip or zstd) to ``dst``.

    ``dst`` receives the uncompressed tar (wrap it in a :class:`~pkgtool.oci.compress.DeterministicCompressor`
    to compress while writing).  ``expect_diff_id``, if given, is checked against the
    *input's* uncompressed content.  Nothing is ever extracted to disk; non-seekable or
    compressed input is spooled to a temp file in ``spool_dir``.
    """
    if source_date_epoch < 0:
        raise PkgtoolError(f"SOURCE_DATE_EPOCH must not be negative (got {source_date_epoch})")
    counted = HashingWriter(dst)
    with _random_access(src, what=what, limits=limits, spool_dir=spool_dir,
                        expect_diff_id=expect_diff_id) as plain:
        try:
            archive = tarfile.open(  # noqa: SIM115 - closed by the `with archive` below
                fileobj=plain, mode="r:", tarinfo=bounded_tarinfo(limits),
                encoding="utf-8", errors="surrogateescape")
        except tarfile.TarError as exc:
            raise LayerError(f"{what}: not a valid tar ({exc})") from None
        except EOFError:
            raise LayerError(f"{what}: not a valid tar (truncated)") from None
        with archive:
            entries = _read_entries(archive, what=what, limits=limits)
            holders = _link_groups(entries, what)
            ordered = sorted(entries.values(), key=lambda e: e.key)
            with tarfile.open(fileobj=counted, mode="w|", format=TAR_FORMAT,  # type: ignore[call-overload]
                              encoding="utf-8", errors="surrogateescape") as out:
                for entry in ordered:
                    _write_entry(out, archive, entry, entries, holders,
                                 epoch=source_date_epoch, what=what, limits=limits)
    return NormalizedLayer(diff_id=counted.digest, size=counted.size, entries=len(ordered))


def _write_entry(out: tarfile.TarFile, archive: tarfile.TarFile, entry: _Entry,
                 entries: dict[str, _Entry], holders: dict[str, str], *, epoch: int, what: str,
                 limits: LayerLimits) -> None:
    holder = holders.get(entry.path)
    if holder is not None and holder != entry.path:
        # A link takes the holder's metadata, so which member the builder happened to
        # store the data under cannot leak into the bytes.
        holder_info = entries[holder].info
        header = _header(_Entry(entry.path, entry.key, holder_info, tarfile.LNKTYPE),
                         epoch=epoch, what=what, limits=limits)
        header.type, header.linkname, header.size = tarfile.LNKTYPE, holder, 0
        header.devmajor = header.devminor = 0
        out.addfile(header)
        return
    header = _header(entry, epoch=epoch, what=what, limits=limits)
    if entry.kind != tarfile.REGTYPE:
        out.addfile(header)
        return
    data = archive.extractfile(entry.info)
    if data is None:
        raise LayerError(f"{what}: cannot read data of {entry.info.name!r}")
    try:
        out.addfile(header, data)
    except (OSError, tarfile.TarError) as exc:
        raise LayerError(f"{what}: truncated data for {entry.info.name!r} ({exc})") from None
