"""Where images are read from, behind one interface.

:class:`ImageSource` is what every reader of images (assembly, SBOMs, attaching and
verifying signatures, package builds) asks for; three stores implement it and are
interchangeable:

* :class:`~pkgtool.oci.layout.Layout`, the local content-addressed cache;
* :class:`~pkgtool.oci.registry.RegistryClient`, a registry's distribution API;
* :class:`CachedSource`, the cache in front of a registry: what the cache has is read from
  disk, anything else from the registry, and blobs fetched that way are kept in the cache
  (digest-verified) for the next reader.

Every read is verified: a manifest's bytes must hash to the digest that names it, and a
blob stream raises at its end if its bytes do not hash to the descriptor's digest, so a
consumer that reads to the end never uses unverified content silently.  References are
full (:class:`~pkgtool.oci.reference.Reference`): a registry needs the repository, the
cache ignores it for content (blobs are shared) and uses the whole name for tags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from pkgtool.errors import PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.manifest import Manifest
from pkgtool.oci.reference import Reference

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient


class NotFoundError(PkgtoolError):
    """The source has no manifest for a reference."""


class ImageSource(Protocol):
    """Read access to images: resolve, manifests, verified blobs, referrers."""

    def resolve(self, ref: Reference) -> Descriptor | None:
        """The descriptor of what ``ref`` names (its digest, or what its tag points at),
        or None when the source has nothing there."""
        ...

    def manifest(self, ref: Reference) -> Manifest:
        """The manifest or index ``ref`` names, its bytes verified; :class:`NotFoundError`
        when there is none."""
        ...

    def blob(self, ref: Reference, descriptor: Descriptor) -> BinaryIO:
        """A stream of the blob ``descriptor`` in ``ref``'s repository that raises at its end
        if the bytes do not match the descriptor's digest and size."""
        ...

    def referrers(self, ref: Reference, *, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``ref``'s digest (only of ``artifact_type``, if given)."""
        ...


def read_blob(source: ImageSource, ref: Reference, descriptor: Descriptor, *, max_size: int) -> bytes:
    """A small blob (a config, a signature payload) in memory, verified and size-bounded."""
    if descriptor.size > max_size:
        raise PkgtoolError(f"{ref.name}@{descriptor.digest}: blob is {descriptor.size} bytes, over {max_size}")
    with source.blob(ref, descriptor) as stream:
        data = stream.read(max_size + 1)
        if len(data) > max_size:
            raise PkgtoolError(f"{ref.name}@{descriptor.digest}: blob is over the {max_size}-byte limit")
        # Read on to the end, which is where the digest is checked.
        if stream.read(1):
            raise PkgtoolError(f"{ref.name}@{descriptor.digest}: blob is longer than its descriptor says")
    return data


def manifest_or_none(source: ImageSource, ref: Reference) -> Manifest | None:
    """The manifest ``ref`` names, or None when the source has none there."""
    try:
        return source.manifest(ref)
    except NotFoundError:
        return None


def config_descriptor(manifest: Manifest, *, what: str) -> Descriptor:
    """The config of an image manifest (an index has none)."""
    if manifest.is_index or manifest.config is None:
        raise PkgtoolError(f"{what}: {manifest.media_type} is not an image manifest")
    return manifest.config


def manifest_media_type(data: bytes) -> str:
    """The media type a manifest's bytes declare, or infer when OCI lets them leave it out."""
    from pkgtool.jsonio import object_or_none

    doc = object_or_none(data) or {}
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST


class CachedSource:
    """The layout cache in front of a registry (read-through).

    Manifests and blobs the cache holds are read from it without touching the network, so a
    warm, pinned build works offline; the registry client is only made (and ``requests``
    only imported) on the first miss.  Blobs read from the registry are ingested into the
    cache first (hashed while written, renamed into place only when they verify, retried on
    transient faults by the client) and then read back from it.  Tags always ask the
    registry: they move, the cache's copy may be stale.
    """

    def __init__(self, layout: Layout, remote: Callable[[], RegistryClient] | None) -> None:
        layout.ensure()
        self.layout = layout
        self._make_remote = remote
        self._remote: RegistryClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CachedSource({self.layout!r})"

    def remote(self, ref: Reference) -> RegistryClient:
        """The registry client for ``ref`` (made on first use)."""
        with self._lock:
            if self._remote is None:
                if self._make_remote is None:
                    raise PkgtoolError(f"{ref}: not in the cache, and no registry to pull it from")
                self._remote = self._make_remote()
            return self._remote.for_registry(ref.registry)

    def resolve(self, ref: Reference) -> Descriptor | None:
        if ref.digest and self.layout.has_blob(ref.digest):
            return self.layout.resolve(ref)
        return self.remote(ref).resolve(ref)

    def manifest(self, ref: Reference) -> Manifest:
        if ref.digest and self.layout.has_blob(ref.digest):
            return self.layout.manifest(ref)
        found = self.remote(ref).manifest(ref)
        self.layout.write_blob(found.data, expected_digest=found.digest)
        return found

    def blob(self, ref: Reference, descriptor: Descriptor) -> BinaryIO:
        self.ensure_blob(ref, descriptor)
        return self.layout.blob(ref, descriptor)

    def ensure_blob(self, ref: Reference, descriptor: Descriptor) -> None:
        """Download the blob into the cache unless it is there already."""
        if not self.layout.has_blob(descriptor.digest):
            self.remote(ref).download_blob(ref.repository, descriptor, self.layout)

    def blob_file(self, descriptor: Descriptor) -> Path | None:
        return self.layout.blob_file(descriptor)

    def referrers(self, ref: Reference, *, artifact_type: str | None = None) -> list[Descriptor]:
        # Signatures are added after an image is cached: only the registry knows them all.
        return self.remote(ref).referrers(ref, artifact_type=artifact_type)


if TYPE_CHECKING:
    # mypy proves here that the three stores implement the protocol.
    def _layout_is_a_source(layout: Layout) -> ImageSource:
        return layout

    def _registry_is_a_source(client: RegistryClient) -> ImageSource:
        return client

    def _cached_is_a_source(cached: CachedSource) -> ImageSource:
        return cached
