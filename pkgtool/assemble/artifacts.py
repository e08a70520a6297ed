"""Build products kept in the layout cache, found again by a key over their inputs.

Initrd segments and a kernel image's boot files are stored as small OCI artifacts in the
same layout as pulled images, so they share its guarantees: every blob is written to a temp
file, hashed, and renamed into place only when complete (a build killed with ``kill -9``
leaves nothing a later build would use), concurrent builds that store the same product
rename the same bytes onto the same name, and ``pkgtool cache ls``, ``cache clean`` and
``cache rm`` see and prune them like everything else.

An artifact is an OCI manifest (``artifactType`` :data:`ARTIFACT_TYPES`), tagged
``<kind>/<key>``, whose layers are the product's files, each named by the
``org.opencontainers.image.title`` annotation.  Blobs are verified again when they are read
(:meth:`ArtifactCache.copy_into`), and an artifact whose blob is missing or corrupt is
dropped so that the caller builds it anew; it is never used.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pkgtool.errors import CacheError, PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.layout import Layout

TITLE = "org.opencontainers.image.title"
ARTIFACT_TYPES = {
    "initrd-segment": "application/vnd.pkgtool.initrd.segment.v1",
    "kernel-files": "application/vnd.pkgtool.kernel.files.v1",
}
_EMPTY = b"{}"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredFile:
    title: str
    media_type: str
    source: Path | bytes
    annotations: Mapping[str, str] | None = None


class ArtifactCache:
    """Artifacts of :data:`ARTIFACT_TYPES` kinds in ``layout``, by key."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._refs: dict[str, Descriptor] | None = None
        # Segments are stored from a worker thread while the main thread looks others up.
        self._lock = threading.Lock()

    @staticmethod
    def ref_name(kind: str, key: str) -> str:
        return f"pkgtool-{kind}/{key}"

    def _index(self) -> dict[str, Descriptor]:
        # index.json is read once per build: a warm build looks up a dozen keys.
        with self._lock:
            if self._refs is None:
                self._refs = dict(self.layout.list_refs())
            return self._refs

    def get(self, kind: str, key: str) -> dict[str, Descriptor] | None:
        """The files of the artifact ``kind``/``key`` (title -> blob), or None when it is not
        cached or is incomplete (then it is dropped, to be built again)."""
        name = self.ref_name(kind, key)
        descriptor = self._index().get(name)
        if descriptor is None:
            return None
        try:
            manifest = self.layout.manifest_at(descriptor)
            files = {(layer.annotations or {}).get(TITLE, ""): layer for layer in manifest.layers}
            if all(self.layout.has_blob(d.digest) for d in files.values()):
                return files
        except PkgtoolError:
            pass
        self.drop(kind, key)
        return None

    def put(self, kind: str, key: str, files: Sequence[StoredFile], *,
            annotations: Mapping[str, str] | None = None) -> dict[str, Descriptor]:
        """Store ``files`` as the artifact ``kind``/``key`` (blobs first, the tag last)."""
        layers: list[Descriptor] = []
        for item in files:
            if isinstance(item.source, bytes):
                digest = self.layout.write_blob(item.source)
                size = len(item.source)
            else:
                digest = self.layout.ingest_file(item.source)
                size = item.source.stat().st_size
            layers.append(Descriptor(item.media_type, digest, size,
                                     annotations={**dict(item.annotations or {}), TITLE: item.title}))
        self.layout.write_blob(_EMPTY)
        manifest = hashed_json({
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPES[kind],
            "config": Descriptor.for_bytes(mediatypes.OCI_EMPTY, _EMPTY).to_json(),
            "layers": [layer.to_json() for layer in layers],
            "annotations": {"pkgtool.cache.key": key, **dict(annotations or {})},
        })
        self.layout.write_blob(manifest)
        descriptor = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest, artifact_type=ARTIFACT_TYPES[kind])
        self.layout.tag(self.ref_name(kind, key), descriptor)
        self._index()[self.ref_name(kind, key)] = descriptor
        return {layer.annotations[TITLE]: layer for layer in layers if layer.annotations}

    def drop(self, kind: str, key: str) -> None:
        name = self.ref_name(kind, key)
        self.layout.untag(name)
        self._index().pop(name, None)

    def read(self, descriptor: Descriptor, *, max_size: int) -> bytes:
        """A small file of an artifact, verified."""
        return self.layout.read_blob(descriptor.digest, max_size=max_size)

    def copy_into(self, descriptor: Descriptor, out: BinaryIO) -> bool:
        """Append the blob to ``out`` if its bytes match its digest; else put ``out`` back
        where it was (nothing unverified stays in an output) and return False."""
        start = out.tell()
        sha = hashlib.sha256()
        try:
            with open(self.layout.blob_path(descriptor.digest), "rb") as blob:
                while chunk := blob.read(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
        except (FileNotFoundError, CacheError):
            pass
        else:
            if "sha256:" + sha.hexdigest() == descriptor.digest:
                return True
        out.seek(start)
        out.truncate()
        return False

    def link_or_copy(self, descriptor: Descriptor, dest: Path) -> bool:
        """Put the verified blob at ``dest``; False (and no ``dest``) if it does not verify."""
        with open(dest, "wb") as out:
            if self.copy_into(descriptor, out):
                return True
        os.unlink(dest)
        return False


def cache_key(*parts: object) -> str:
    """The hex sha256 of the canonical JSON of ``parts``: what names a cached product."""
    return hashlib.sha256(hashed_json(list(parts))).hexdigest()
