"""An in-memory ImageSource for unit tests of code that reads layers (a fake: the real
stores, Layout, RegistryClient and CachedSource, are tested against each other in
tests/unit/test_image_source.py and tests/integration/test_image_source_registry.py)."""

from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO

from pkgtool.errors import DigestMismatchError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, sha256_digest
from pkgtool.oci.layer import Layer
from pkgtool.oci.manifest import Manifest, parse_manifest
from pkgtool.oci.reference import Reference, parse_reference
from pkgtool.oci.source import NotFoundError

REF = parse_reference("registry.test/org/img:1")


class _Verifying(io.RawIOBase):
    def __init__(self, data: bytes, digest: str) -> None:
        self._inner, self._digest, self._sha = io.BytesIO(data), digest, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)
        if n:
            self._sha.update(memoryview(buffer)[:n])
        elif "sha256:" + self._sha.hexdigest() != self._digest:
            raise DigestMismatchError(f"blob {self._digest}: content hashes to sha256:{self._sha.hexdigest()}")
        return n


class MemorySource:
    """Blobs and tags in dicts; ``corrupt`` serves other bytes than a digest names."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, Descriptor] = {}
        self.corrupt: dict[str, bytes] = {}

    def add(self, data: bytes, media_type: str = mediatypes.OCI_LAYER) -> Descriptor:
        descriptor = Descriptor.for_bytes(media_type, data)
        self.blobs[descriptor.digest] = data
        return descriptor

    def resolve(self, ref: Reference) -> Descriptor | None:
        if ref.digest:
            data = self.blobs.get(ref.digest)
            return None if data is None else Descriptor(mediatypes.OCI_MANIFEST, ref.digest, len(data))
        return self.tags.get(str(ref))

    def manifest(self, ref: Reference) -> Manifest:
        found = self.resolve(ref)
        if found is None:
            raise NotFoundError(f"{ref}: not found")
        return parse_manifest(self.blobs[found.digest], digest=found.digest, source=str(ref))

    def blob(self, ref: Reference, descriptor: Descriptor) -> BinaryIO:
        data = self.corrupt.get(descriptor.digest, self.blobs[descriptor.digest])
        return io.BufferedReader(_Verifying(data, descriptor.digest))  # type: ignore[return-value]

    def referrers(self, ref: Reference, *, artifact_type: str | None = None) -> list[Descriptor]:
        return []


def make_layer(data: bytes, *, what: str = "img: layer 1", diff_id: str | None = None,
               source: MemorySource | None = None) -> Layer:
    """A Layer over ``data`` (any compression) held by an in-memory source."""
    source = source or MemorySource()
    media = mediatypes.OCI_LAYER_GZIP if data[:2] == b"\x1f\x8b" else mediatypes.OCI_LAYER
    return Layer(source.add(data, media), source, REF, diff_id, what=what)


def digest_of(data: bytes) -> str:
    return sha256_digest(data)
