"""A layer that opens itself: the one place that reads layer bytes and tells what they mean.

:class:`Layer` is a descriptor plus the :class:`~pkgtool.oci.source.ImageSource` its bytes
come from (and, when the image config gives it, its ``diff_id``):

* :meth:`Layer.compressed` is the blob as stored, verified against the descriptor's digest
  when it is read to its end;
* :meth:`Layer.uncompressed` is the tar inside, whatever the compression (sniffed from the
  bytes, never trusted from the media type), bounded against decompression bombs, and
  checked against the ``diff_id`` at its end;
* :meth:`Layer.entries` walks the tar and yields :class:`LayerEntry` values: paths
  normalised and refused if absolute or climbing out with ``..``, mtimes made finite, and
  OCI whiteouts marked (``.wh.NAME`` hides ``NAME`` of lower layers, ``.wh..wh..opq``
  hides everything lower layers put in its directory).  It reads both streams to their ends
  after the last entry, so a layer whose bytes do not match its digest or its ``diff_id``
  raises before its caller is done with it.

What whiteouts *do* (they apply to lower layers only) is decided in one place too: the
file tree that applies layers, :mod:`pkgtool.oci.filetree`.  Reading untrusted tar input
(size bounds, header extension bounds, path cleaning) lives here and is shared with the
layer normaliser (:mod:`pkgtool.oci.normalize`).
"""

from __future__ import annotations

import hashlib
import io
import math
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, Protocol, cast, runtime_checkable

from pkgtool.errors import PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.reference import Reference
from pkgtool.streams import ForwardReader, chunk_file, prefetched

if TYPE_CHECKING:
    from pkgtool.oci.source import ImageSource

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1024 * 1024
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# time_t as tar and cpio can carry it; a PAX mtime beyond it (or NaN) is clamped.
MAX_MTIME = 2**63 - 1

Compression = Literal["gzip", "zstd", "none"]

_EXTENSION_TYPES = frozenset({
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
})
LAYER_MEDIA_TYPES = frozenset({
    mediatypes.OCI_LAYER, mediatypes.OCI_LAYER_GZIP, mediatypes.OCI_LAYER_ZSTD,
    mediatypes.DOCKER_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar",
})


class LayerError(PkgtoolError):
    """A layer tar is malformed, hostile, over a size bound, or not what its digests say."""


@dataclass(frozen=True)
class LayerLimits:
    """Bounds for untrusted layer input (defaults fit any real root file system)."""

    max_bytes: int = 64 * 1024**3  # uncompressed tar
    max_entries: int = 2_000_000
    max_path_bytes: int = 4096  # PATH_MAX
    max_header_extension: int = 1024 * 1024  # one pax / GNU long-name record block
    max_xattr_bytes: int = 256 * 1024  # all extended attributes of one entry


DEFAULT_LIMITS = LayerLimits()


# --------------------------------------------------------------------------- untrusted tar input


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / long-name records before tarfile reads them into memory."""

    max_extension = DEFAULT_LIMITS.max_header_extension

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENSION_TYPES and self.size > self.max_extension:
            raise LayerError(f"tar header extension of {self.size} bytes (limit {self.max_extension})")
        return super()._proc_member(archive)  # type: ignore[misc, no-any-return]


def bounded_tarinfo(limits: LayerLimits = DEFAULT_LIMITS) -> type[tarfile.TarInfo]:
    """A ``tarinfo=`` class for ``tarfile.open`` that bounds header extensions."""
    if limits.max_header_extension == _BoundedTarInfo.max_extension:
        return _BoundedTarInfo
    return type("_BoundedTarInfoCustom", (_BoundedTarInfo,), {"max_extension": limits.max_header_extension})


def clean_path(raw: str, *, what: str, limits: LayerLimits = DEFAULT_LIMITS) -> str:
    """The canonical relative form of a tar path ('' for the root); hostile paths refused."""
    if "\x00" in raw:
        raise LayerError(f"{what}: refusing a path with a NUL byte {raw[:80]!r}")
    if raw.startswith("/"):
        raise LayerError(f"{what}: refusing absolute path {raw[:200]!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"{what}: refusing path with '..' component {raw[:200]!r}")
    path = "/".join(parts)
    if len(path.encode("utf-8", "surrogateescape")) > limits.max_path_bytes:
        raise LayerError(f"{what}: path longer than {limits.max_path_bytes} bytes: {raw[:80]!r}...")
    return path


def finite_mtime(value: float) -> int:
    """A tar entry's mtime as an integer time_t: NaN and infinities (a PAX record may say
    anything) become 0, and values outside time_t are clamped."""
    if not math.isfinite(value):
        return 0
    return max(-MAX_MTIME, min(MAX_MTIME, int(value)))


# --------------------------------------------------------------------------- compression sniffing


def sniff(head: bytes) -> Compression:
    """The compression of a stream that starts with ``head`` (by magic number)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def peek(src: IO[bytes], n: int) -> tuple[bytes, IO[bytes]]:
    """The first ``n`` bytes of ``src`` and a stream that still starts at them."""
    if src.seekable():
        pos = src.tell()
        head = src.read(n)
        src.seek(pos)
        return head, src
    head = src.read(n)
    return head, io.BufferedReader(_Prefixed(head, src), CHUNK)


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``rest``: un-reads a peeked prefix."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        view[:len(data)] = data
        return len(data)


def decompressed_chunks(src: IO[bytes], *, what: str, limits: LayerLimits = DEFAULT_LIMITS) -> Iterator[bytes]:
    """The uncompressed bytes of ``src`` (gzip, zstd or plain, sniffed), in bounded chunks.

    Output per step is bounded, so a small bomb cannot explode in memory, and the total is
    bounded by ``limits.max_bytes``.  Concatenated gzip members and zstd frames are read
    through, as gzip(1) and zstd(1) do.
    """
    head, stream = peek(src, 4)
    kind = sniff(head)
    if kind == "gzip":
        chunks = _gunzip(stream, what)
    elif kind == "zstd":
        chunks = _unzstd(stream, what)
    else:
        chunks = iter(lambda: stream.read(CHUNK), b"")
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limits.max_bytes:
            raise LayerError(f"{what}: more than {limits.max_bytes} uncompressed bytes")
        yield chunk


def _gunzip(src: IO[bytes], what: str) -> Iterator[bytes]:
    dec = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        while True:
            chunk = dec.unused_data or src.read(CHUNK)
            if not chunk:
                break
            if dec.eof:
                # Another gzip member follows the one that ended.
                dec = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
            data = dec.decompress(chunk, CHUNK)
            while data:
                yield data
                data = dec.decompress(dec.unconsumed_tail, CHUNK)
        if not dec.eof:
            raise LayerError(f"{what}: truncated gzip stream")
    except zlib.error as exc:
        raise LayerError(f"{what}: corrupt gzip stream ({exc})") from None


def _unzstd(src: IO[bytes], what: str) -> Iterator[bytes]:
    import zstandard  # only when a zstd layer shows up

    try:
        with zstandard.ZstdDecompressor().stream_reader(src, closefd=False, read_across_frames=True) as reader:
            while chunk := reader.read(CHUNK):
                yield chunk
    except zstandard.ZstdError as exc:
        raise LayerError(f"{what}: corrupt zstd stream ({exc})") from None


# --------------------------------------------------------------------------- the layer


@runtime_checkable
class LocalBlobs(Protocol):
    """A source that keeps blobs as files (the layout cache), so an uncompressed layer's
    file contents can be referenced in place instead of copied."""

    def blob_file(self, descriptor: Descriptor) -> Path | None: ...


@dataclass
class LayerEntry:
    """One tar entry of a layer.  ``path`` is clean and relative ('' is the root);
    ``whiteout`` is the path a ``.wh.NAME`` entry hides, ``opaque`` the directory an opaque
    marker empties (of lower layers' entries).  :meth:`open` reads a regular file's data and
    is valid only until the next entry."""

    path: str
    info: tarfile.TarInfo
    mtime: int
    what: str = "entry"
    whiteout: str | None = None
    opaque: str | None = None
    _archive: tarfile.TarFile | None = field(default=None, repr=False)

    def open(self) -> IO[bytes]:
        """The data of a regular file entry, readable until the next entry is read."""
        assert self._archive is not None
        if not self.info.isreg():
            # tarfile would open a hard link's target, an earlier entry of a one-pass stream.
            raise LayerError(f"{self.what}: not a regular file: it has no data to read")
        reader = self._archive.extractfile(self.info)
        if reader is None:
            raise LayerError(f"{self.what}: has no data to read")
        return io.BufferedReader(_GuardedReader(reader, self.what), CHUNK)


class _GuardedReader(io.RawIOBase):
    """A file's data in a layer tar: a read that fails (a truncated or corrupt layer) is a
    :class:`LayerError` naming the entry, not tarfile's exception."""

    def __init__(self, inner: IO[bytes], what: str) -> None:
        super().__init__()
        self._inner, self._what = inner, what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._inner.readinto(buffer))  # type: ignore[attr-defined]
        except (tarfile.TarError, EOFError, zlib.error, io.UnsupportedOperation) as exc:
            raise LayerError(f"{self._what}: the layer's data breaks off ({exc})") from None


@dataclass(frozen=True)
class Layer:
    """A layer blob in ``ref``'s repository of ``source``; ``what`` names it in errors
    (e.g. ``127.0.0.1:5000/org/img@sha256:…: layer 2``)."""

    descriptor: Descriptor
    source: ImageSource
    ref: Reference
    diff_id: str | None = None
    what: str = "layer"
    limits: LayerLimits = DEFAULT_LIMITS

    @classmethod
    def of_image(cls, source: ImageSource, ref: Reference, layers: Sequence[Descriptor],
                 config: dict[str, Any] | None, *, image: str) -> list[Layer]:
        """The layers of an image manifest, each paired with its config ``diff_id``.

        A config whose ``rootfs.diff_ids`` does not list one per layer is refused: the
        image could not be verified layer by layer.
        """
        diff_ids: list[str | None] = [None] * len(layers)
        if config is not None:
            rootfs = config.get("rootfs")
            listed = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
            if not isinstance(listed, list) or not all(isinstance(d, str) for d in listed):
                raise LayerError(f"{image}: image config has no rootfs.diff_ids list")
            if len(listed) != len(layers):
                raise LayerError(f"{image}: image config lists {len(listed)} diff_ids for {len(layers)} layers")
            diff_ids = list(listed)
        out = []
        for number, (descriptor, diff_id) in enumerate(zip(layers, diff_ids, strict=True), start=1):
            if descriptor.media_type not in LAYER_MEDIA_TYPES:
                raise LayerError(f"{image}: layer {number} ({descriptor.digest}) has unsupported media type "
                                 f"{descriptor.media_type}")
            out.append(cls(descriptor, source, ref, diff_id, what=f"{image}: layer {number}"))
        return out

    def compressed(self) -> BinaryIO:
        """The blob as stored; reading it to the end verifies its digest."""
        return self.source.blob(self.ref, self.descriptor)

    def uncompressed(self) -> BinaryIO:
        """The layer's tar; reading it to the end verifies the blob's digest and the diff_id.

        Reading, decompressing and hashing run in a thread of their own (they release the
        GIL), so they overlap with whatever the reader does with the tar.
        """
        return chunk_file(prefetched(self._checked_chunks()), buffer_size=CHUNK)

    def _checked_chunks(self) -> Iterator[bytes]:
        with self.compressed() as raw:
            sha = hashlib.sha256()
            for chunk in decompressed_chunks(raw, what=self.what, limits=self.limits):
                sha.update(chunk)
                yield chunk
            # Bytes after the compressed stream still belong to the blob: read them, so
            # the digest check at its end runs before the diff_id is trusted.
            while raw.read(CHUNK):
                pass
        actual = "sha256:" + sha.hexdigest()
        if self.diff_id is not None and actual != self.diff_id:
            raise LayerError(f"{self.what} ({self.descriptor.digest}): uncompressed content hashes to "
                             f"{actual}, not the diff_id {self.diff_id} its image config names")

    def local_tar(self) -> Path | None:
        """The blob's file when the source keeps it on disk and it is a plain tar (so entry
        data can be referenced by offset); None otherwise."""
        if not isinstance(self.source, LocalBlobs):
            return None
        path = self.source.blob_file(self.descriptor)
        if path is None:
            return None
        with open(path, "rb") as f:
            return path if sniff(f.read(4)) == "none" else None

    def entries(self) -> Iterator[LayerEntry]:
        """Every entry, in tar order, with whiteouts marked (see the module docstring);
        the blob's digest and the diff_id are checked after the last one."""
        with self.uncompressed() as stream:
            yield from read_entries(stream, what=self.what, limits=self.limits)


def read_entries(stream: IO[bytes], *, what: str, limits: LayerLimits = DEFAULT_LIMITS) -> Iterator[LayerEntry]:
    """The entries of the uncompressed tar ``stream``, then ``stream`` read to its end.

    Errors name ``what`` and the entry; nothing a hostile tar contains ends in a Python
    traceback.
    """
    count = 0
    try:
        # Random-access mode over a forward-only stream: a third of the CPU of "r|" (see
        # ForwardReader); entries are still read strictly in order, each before the next.
        with tarfile.open(fileobj=cast(IO[bytes], ForwardReader(stream)), mode="r:",
                          tarinfo=bounded_tarinfo(limits), encoding="utf-8", errors="surrogateescape") as archive:
            for info in archive:
                count += 1
                if count > limits.max_entries:
                    raise LayerError(f"{what}: more than {limits.max_entries} entries")
                yield _entry(info, archive, what=what, limits=limits)
    except (tarfile.TarError, EOFError, io.UnsupportedOperation) as exc:
        raise LayerError(f"{what}: not a readable tar layer: {exc}") from None
    # The tar ends before the stream does (padding): read on to the checks at its end.
    while stream.read(CHUNK):
        pass


def _entry(info: tarfile.TarInfo, archive: tarfile.TarFile, *, what: str, limits: LayerLimits) -> LayerEntry:
    where = f"{what}: entry {info.name[:200]!r}"
    path = clean_path(info.name, what=where, limits=limits)
    entry = LayerEntry(path, info, finite_mtime(info.mtime), what=where, _archive=archive)
    head, _, name = path.rpartition("/")
    if name == OPAQUE_MARKER:
        entry.opaque = head
    elif name.startswith(WHITEOUT_PREFIX):
        hidden = name[len(WHITEOUT_PREFIX):]
        if not hidden:
            raise LayerError(f"{where}: a whiteout that names nothing")
        entry.whiteout = f"{head}/{hidden}" if head else hidden
    return entry
