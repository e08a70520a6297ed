"""Publishing a package: per-arch manifests, then a merge-safe multi-arch index.

Each arch is pushed as ``ORG/IMAGE:<tag>-<arch>`` as soon as it is re-packed, so a run that
fails on one arch keeps the others and the next run builds only what is missing.  The index
``ORG/IMAGE:<tag>`` is written only when every arch of the run is in: a reader that sees the
tag sees a complete image.

The registry API has no compare-and-swap, so the index is a read-modify-write: entries for
arches this run did not build (pushed from another machine) are kept, ours replace any of
the same platform, and so do the ``<tag>-<arch>`` manifests of the package's other arches.
Those per-arch tags are the source of truth: every writer pushes its own before it touches
the index, and no two writers push the same one.  A read-modify-write alone can lose an
arch (two machines read the empty index, both write, the later write drops the earlier
arch), so after writing, a writer reads the index and the per-arch tags again and merges
again until a pass finds nothing to add.  The last writer's pass comes after every other
writer's per-arch push, so it always sees them all.  Entries are sorted by arch, so the
index digest depends only on which manifests it lists, not on who pushed first (LinuxKit's
per-arch pushes from different machines clobber each other's index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pkgtool.arches import arch_rank
from pkgtool.errors import RegistryError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.manifest import Manifest, build_index

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient

_MERGE_ATTEMPTS = 8


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


def arch_tags(client: RegistryClient, *, repository: str, tag: str, arches: Sequence[str]) -> dict[str, Descriptor]:
    """The manifests at ``<tag>-<arch>`` for those of ``arches`` that are pushed."""
    found: dict[str, Descriptor] = {}
    for arch in arches:
        head = client.head_manifest(repository, f"{tag}-{arch}")
        if head is not None and head.media_type in mediatypes.MANIFEST_TYPES:
            found[arch] = Descriptor(head.media_type, head.digest, head.size, platform=Platform("linux", arch))
    return found


def push_index(client: RegistryClient, *, repository: str, tag: str, ours: Mapping[str, Descriptor],
               arches: Sequence[str] = ()) -> Descriptor:
    """Write the index at ``tag``, merged with what is there and with the ``<tag>-<arch>``
    manifests of ``arches`` (the package's arches); returns its descriptor once a pass
    finds the registry's index complete."""
    others = [a for a in arches if a not in ours]
    for _attempt in range(_MERGE_ATTEMPTS):
        existing = client.get_manifest_or_none(repository, tag)
        pushed = arch_tags(client, repository=repository, tag=tag, arches=others)
        data = build_index(merged_entries(existing, {**pushed, **ours}))
        digest = sha256_digest(data)
        if existing is not None and existing.digest == digest:
            return Descriptor(mediatypes.OCI_INDEX, digest, len(data))
        client.put_manifest(repository, tag, data, mediatypes.OCI_INDEX)
        # No return yet: the next pass re-reads the index and the per-arch tags, in case
        # another writer replaced the index or pushed an arch meanwhile.
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

