"""Read a few small files out of an image by streaming its layers (never extracting).

The SBOM needs the dpkg status files and copyright files of the image's *final* file
system, so the layers are applied in order the way a runtime would, but only for the
paths asked for:

* a ``.wh.NAME`` entry deletes ``NAME`` (and everything under it) from lower layers;
* ``.wh..wh..opq`` in a directory hides everything lower layers put in it;
* any non-directory entry hides a lower file or directory of the same path (and its
  contents);
* entries of one layer never hide each other (the image spec applies whiteouts to lower
  layers only), so a layer's changes are collected first and applied when it ends.

Every layer is read to its end, so the digest check of the source (the cache's verifying
reader, or the registry client's hashing stream) runs before anything read from it is
used: a layer whose bytes do not match its digest raises instead of contributing files.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Protocol, cast

from pkgtool.errors import PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.streams import chunk_file

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# A dpkg status file of a big distribution is a few MiB; copyright files are small.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
_LAYER_TYPES = frozenset({
    mediatypes.OCI_LAYER, mediatypes.OCI_LAYER_GZIP, mediatypes.OCI_LAYER_ZSTD,
    mediatypes.DOCKER_LAYER_GZIP, "application/vnd.docker.image.rootfs.diff.tar",
})


class BlobSource(Protocol):
    """Where layer bytes come from; ``open`` returns a reader that verifies at EOF."""

    def open(self, descriptor: Descriptor) -> IO[bytes]: ...


class CacheOrRegistry:
    """Blobs from the local layout cache when it has them, else streamed from the registry."""

    def __init__(self, client: RegistryClient, repository: str, layout: Layout | None = None) -> None:
        self.client, self.repository, self.layout = client, repository, layout

    def open(self, descriptor: Descriptor) -> IO[bytes]:
        if self.layout is not None and self.layout.has_blob(descriptor.digest):
            return self.layout.open_blob(descriptor.digest)
        chunks = self.client.iter_blob(self.repository, descriptor.digest, expected_size=descriptor.size)
        return cast(IO[bytes], chunk_file(chunks, buffer_size=_CHUNK))


def read_files(
    layers: Sequence[Descriptor],
    source: BlobSource,
    *,
    wanted: Callable[[str], bool],
    image: str = "image",
) -> dict[str, bytes]:
    """The final contents of every regular file whose path (relative, no ``./``) is
    ``wanted``, after applying ``layers`` in order."""
    state: dict[str, bytes] = {}
    for number, layer in enumerate(layers, start=1):
        if layer.media_type not in _LAYER_TYPES:
            raise PkgtoolError(f"{image}: layer {number} ({layer.digest}) has unsupported media type {layer.media_type}")
        what = f"{image}: layer {number} ({layer.digest})"
        with source.open(layer) as raw:
            changes = _read_layer(raw, wanted=wanted, lower=state, what=what)
            while raw.read(_CHUNK):
                pass  # to the end: the digest is checked there
        changes.apply(state)
        if sum(len(v) for v in state.values()) > MAX_TOTAL_BYTES:
            raise PkgtoolError(f"{what}: wanted files exceed {MAX_TOTAL_BYTES} bytes")
    return state


class _Changes:
    def __init__(self) -> None:
        self.added: dict[str, bytes] = {}
        self.hidden: set[str] = set()  # whiteouts and replaced paths: hide path and below
        self.opaque: set[str] = set()  # directories whose lower contents are hidden

    def apply(self, state: dict[str, bytes]) -> None:
        for path in list(state):
            parents = _parents(path)
            if path in self.hidden or any(p in self.hidden for p in parents if p) or any(
                p in self.opaque for p in parents
            ):
                del state[path]
        state.update(self.added)


def _parents(path: str) -> list[str]:
    """Every directory above ``path``, the root ("") included."""
    parts = path.split("/")[:-1]
    return [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _read_layer(raw: IO[bytes], *, wanted: Callable[[str], bool], lower: dict[str, bytes], what: str) -> _Changes:
    changes = _Changes()
    stream = _decompressed(raw)
    try:
        with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as archive:
            for info in archive:
                path = _clean(info.name, what)
                if path is None:
                    continue
                head, _, base = path.rpartition("/")
                if base == OPAQUE_MARKER:
                    changes.opaque.add(head)
                    continue
                if base.startswith(WHITEOUT_PREFIX):
                    changes.hidden.add(f"{head}/{base[len(WHITEOUT_PREFIX):]}".lstrip("/"))
                    continue
                if not info.isdir():
                    changes.hidden.add(path)
                    changes.added.pop(path, None)
                if not wanted(path):
                    continue
                if info.isreg():
                    if info.size > MAX_FILE_BYTES:
                        raise PkgtoolError(f"{what}: {path} is {info.size} bytes, over {MAX_FILE_BYTES}")
                    reader = archive.extractfile(info)
                    changes.added[path] = reader.read() if reader is not None else b""
                elif info.islnk():
                    target = _clean(info.linkname, what)
                    content = changes.added.get(target or "", lower.get(target or ""))
                    if content is not None:
                        changes.added[path] = content
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise PkgtoolError(f"{what}: not a readable tar layer: {exc}") from None
    return changes


def _clean(name: str, what: str) -> str | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PkgtoolError(f"{what}: entry {name!r} climbs out of the root")
    return "/".join(parts) or None


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    """``raw`` as a plain tar stream; gzip and zstd are recognised by their magic."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(cast(io.RawIOBase, raw), _CHUNK)
    head = buffered.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if head.startswith(_ZSTD_MAGIC):
        import zstandard  # only when a zstd layer shows up

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True))
    return buffered
