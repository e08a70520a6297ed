"""Publishing a package: per-arch manifests, then a merge-safe multi-arch index.

Each arch is pushed as ``ORG/IMAGE:<tag>-<arch>`` as soon as it is re-packed, so a run that
fails on one arch keeps the others and the next run builds only what is missing.  The index
``ORG/IMAGE:<tag>`` is written only when every arch of the run is in: a reader that sees the
tag sees a complete image.

The registry API has no compare-and-swap, so the index is a read-modify-write: entries for
arches this run did not build (pushed from another machine) are kept, ours replace any of
the same platform, and the result is read back.  If another writer got in between, the merge
is redone, a bounded number of times.  Entries are sorted by arch, so the index digest
depends only on which manifests it lists, not on who pushed first (LinuxKit's per-arch
pushes from different machines clobber each other's index).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pkgtool.arches import arch_rank
from pkgtool.errors import RegistryError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.manifest import Manifest, build_index

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient

_MERGE_ATTEMPTS = 4


def _order(descriptor: Descriptor) -> tuple[int, str, str, str]:
    platform = descriptor.platform or Platform("", "")
    rank = arch_rank(platform.architecture)
    return (rank, platform.os, platform.architecture, platform.variant)


def merged_entries(existing: Manifest | None, ours: Mapping[str, Descriptor]) -> list[Descriptor]:
    """Index entries: ``existing``'s for other platforms, plus ``ours`` (arch -> manifest)."""
    entries: list[Descriptor] = []
    if existing is not None and existing.is_index:
        for child in existing.manifests:
            platform = child.platform
            if platform is None or (platform.os == "linux" and platform.architecture in ours):
                continue
            entries.append(child)
    for arch, descriptor in ours.items():
        entries.append(Descriptor(descriptor.media_type, descriptor.digest, descriptor.size,
                                  platform=descriptor.platform or Platform("linux", arch)))
    return sorted(entries, key=_order)


def push_arch_manifest(client: RegistryClient, layout: Layout, *, repository: str, tag: str, arch: str,
                       manifest: Descriptor) -> None:
    """Push one arch's image (blobs, then the manifest) from the cache to ``<tag>-<arch>``."""
    from pkgtool.oci.transfer import push

    push(client, layout, manifest, f"{client.registry}/{repository}:{tag}-{arch}")


def push_index(client: RegistryClient, *, repository: str, tag: str, ours: Mapping[str, Descriptor]) -> Descriptor:
    """Write the index at ``tag``, merged with what is there; returns its descriptor."""
    for _attempt in range(_MERGE_ATTEMPTS):
        existing = client.get_manifest_or_none(repository, tag)
        data = build_index(merged_entries(existing, ours))
        digest = sha256_digest(data)
        if existing is not None and existing.digest == digest:
            return Descriptor(mediatypes.OCI_INDEX, digest, len(data))
        client.put_manifest(repository, tag, data, mediatypes.OCI_INDEX)
        now = client.head_manifest(repository, tag)
        if now is not None and now.digest == digest:
            return Descriptor(mediatypes.OCI_INDEX, digest, len(data))
    raise RegistryError(
        f"{client.registry}/{repository}:{tag}: the index kept changing while it was merged "
        f"({_MERGE_ATTEMPTS} attempts); another build is pushing the same tag, try again"
    )


def store_local(layout: Layout, *, name: str, ours: Mapping[str, Descriptor], arch_names: Mapping[str, str]) -> Descriptor:
    """``--no-push``: tag each arch and an index in the local cache instead of pushing."""
    for arch, descriptor in ours.items():
        layout.tag(arch_names[arch], descriptor)
    existing = None
    found = layout.resolve(name)
    if found is not None:
        from pkgtool.oci.manifest import parse_manifest

        existing = parse_manifest(layout.read_blob(found.digest, max_size=mediatypes.MAX_MANIFEST_BYTES),
                                  content_type=found.media_type, digest=found.digest, source=name)
    data = build_index(merged_entries(existing, ours))
    descriptor = Descriptor(mediatypes.OCI_INDEX, layout.write_blob(data), len(data))
    layout.tag(name, descriptor)
    return descriptor

