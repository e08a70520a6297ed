"""Moving images between a registry and the local layout cache.

``pull`` fetches every manifest first (small, verified, held in memory), then the blobs in
parallel threads straight into the cache (each streamed, hashed and renamed into place
only when its digest matches), and writes the manifests and the ref last.  So a bad
manifest (HTML, oversized, unknown type, an index naming itself) stops the pull before
anything is written, and a failed pull never leaves a ref to incomplete content.

``push`` is the mirror image: blobs first (skipping those the registry has), then child
manifests by digest, then the root by tag, so no tag ever points at missing content.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from pkgtool.errors import PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layout import Layout
from pkgtool.oci.manifest import Manifest, parse_manifest, select_platform
from pkgtool.oci.reference import Reference, parse_reference

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient

# Enough to keep a local registry and a disk busy without starving a 2-core machine.
PARALLELISM = 4
# Indexes of indexes exist (rarely); deeper nesting is a hostile graph, not an image.
MAX_DEPTH = 4


class ProgressSink(Protocol):
    def step(self, group: str, key: str, name: str, *, started: bool = ..., finished: bool = ...,
             cached: bool = ..., error: str = ...) -> None: ...


def pull(
    client: RegistryClient,
    ref: Reference | str,
    layout: Layout,
    *,
    platforms: Sequence[Platform] | None = None,
    progress: ProgressSink | None = None,
    parallelism: int = PARALLELISM,
) -> Descriptor:
    """Pull ``ref`` into ``layout``, tag it there by its full reference string and return
    the root descriptor (the index or manifest the reference names).

    With ``platforms``, only those entries of an index (each one required) are fetched;
    the index itself is kept whole, so its digest stays the registry's.  Blobs already in
    the cache are not downloaded again.
    """
    reference = ref if isinstance(ref, Reference) else parse_reference(ref)
    client = client.for_registry(reference.registry)
    repository = reference.repository
    source = str(reference)
    layout.ensure()

    root = client.get_manifest(repository, reference.locator)
    manifests: list[Manifest] = []
    blobs: dict[str, Descriptor] = {}
    _collect(client, repository, root, source=source, platforms=platforms,
             manifests=manifests, blobs=blobs, depth=0)

    def fetch(descriptor: Descriptor) -> None:
        key = descriptor.digest
        label = f"blob {descriptor.digest[7:19]} ({_size(descriptor.size)})"
        if layout.has_blob(descriptor.digest):
            if progress:
                progress.step(source, key, label, cached=True)
            return
        if progress:
            progress.step(source, key, label, started=True)
        try:
            client.download_blob(repository, descriptor, layout)
        except PkgtoolError as exc:
            if progress:
                progress.step(source, key, label, error=str(exc))
            raise
        if progress:
            progress.step(source, key, label, finished=True)

    _run_parallel(fetch, list(blobs.values()), parallelism)
    # Children were collected after their parents: write in reverse, root last.
    for manifest in reversed(manifests):
        layout.write_blob(manifest.data, expected_digest=manifest.digest)
    descriptor = root.descriptor
    layout.tag(source, descriptor)
    return descriptor


def _collect(
    client: RegistryClient,
    repository: str,
    manifest: Manifest,
    *,
    source: str,
    platforms: Sequence[Platform] | None,
    manifests: list[Manifest],
    blobs: dict[str, Descriptor],
    depth: int,
) -> None:
    if depth > MAX_DEPTH:
        raise PkgtoolError(f"{source}: indexes nested more than {MAX_DEPTH} deep")
    if any(m.digest == manifest.digest for m in manifests):
        raise PkgtoolError(f"{source}: index graph has a cycle at {manifest.digest}")
    manifests.append(manifest)
    if not manifest.is_index:
        for child in manifest.children():
            blobs.setdefault(child.digest, child)
        return
    if platforms:
        chosen = _dedupe(select_platform(manifest, p, source=source) for p in platforms)
    else:
        chosen = list(manifest.manifests)
    for child in chosen:
        if child.media_type not in mediatypes.ALL_MANIFEST_TYPES:
            # Artifacts listed in an index (attestations, SBOMs) are plain blobs to us.
            blobs.setdefault(child.digest, child)
            continue
        fetched = client.get_manifest(repository, child.digest)
        if fetched.is_index != (child.media_type in mediatypes.INDEX_TYPES) or len(fetched.data) != child.size:
            raise PkgtoolError(
                f"{source}: {child.digest} is a {fetched.media_type} of {len(fetched.data)} bytes, "
                f"but its index says {child.media_type} of {child.size}"
            )
        # The platform choice is made once, at the outermost index.
        _collect(client, repository, fetched, source=source, platforms=None,
                 manifests=manifests, blobs=blobs, depth=depth + 1)


def _dedupe(items: Iterable[Descriptor]) -> list[Descriptor]:
    seen: dict[str, Descriptor] = {}
    for item in items:
        seen.setdefault(item.digest, item)
    return list(seen.values())


def push(client: RegistryClient, layout: Layout, descriptor: Descriptor, ref: Reference | str) -> str:
    """Push the image or index ``descriptor`` from ``layout`` to ``ref``; returns its digest.

    Blobs the registry already has are skipped; so are child manifests it already has,
    which also lets an index whose other platforms were never pulled be pushed back.
    The root is stored at the reference's tag (or by digest when it has none).
    """
    reference = ref if isinstance(ref, Reference) else parse_reference(ref)
    client = client.for_registry(reference.registry)
    repository = reference.repository
    if reference.digest and reference.digest != descriptor.digest:
        raise PkgtoolError(f"cannot push {descriptor.digest} to {reference}: the reference pins another digest")
    root = _load(layout, descriptor, source=str(reference))

    blobs: dict[str, Descriptor] = {}
    ordered: list[Manifest] = []

    def walk(manifest: Manifest, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise PkgtoolError(f"{reference}: indexes nested more than {MAX_DEPTH} deep")
        for child in manifest.children():
            if child.media_type in mediatypes.ALL_MANIFEST_TYPES:
                if client.head_manifest(repository, child.digest) is not None:
                    continue
                walk(_load(layout, child, source=str(reference)), depth + 1)
            else:
                blobs.setdefault(child.digest, child)
        ordered.append(manifest)

    walk(root, 0)

    def upload(blob: Descriptor) -> None:
        if client.blob_exists(repository, blob.digest):
            return
        path = layout.blob_path(blob.digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below; requests streams it
        except FileNotFoundError:
            raise PkgtoolError(f"cannot push {reference}: blob {blob.digest} is not in the cache") from None
        with f:
            client.push_blob(repository, f, digest=blob.digest, size=blob.size)

    _run_parallel(upload, list(blobs.values()), PARALLELISM)
    for manifest in ordered[:-1]:
        client.put_manifest(repository, manifest.digest, manifest.data, manifest.media_type)
    client.put_manifest(repository, reference.tag or root.digest, root.data, root.media_type)
    return root.digest


def _load(layout: Layout, descriptor: Descriptor, *, source: str) -> Manifest:
    data = layout.read_blob(descriptor.digest, max_size=mediatypes.MAX_MANIFEST_BYTES)
    return parse_manifest(data, content_type=descriptor.media_type, digest=descriptor.digest,
                          source=f"{source} ({descriptor.digest})")


def _run_parallel(work: Callable[[Descriptor], None], items: list[Descriptor], parallelism: int) -> None:
    """Run ``work`` over ``items`` on a thread pool; the first failure cancels what has
    not started and is raised (the others' results are discarded)."""
    if not items:
        return
    if parallelism <= 1 or len(items) == 1:
        for item in items:
            work(item)
        return
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=parallelism, thread_name_prefix="pkgtool-transfer"
    ) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in concurrent.futures.as_completed(futures):
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
