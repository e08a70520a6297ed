"""The images an OS image is assembled from: resolved to one arch, with their layers.

Images are read through an :class:`~pkgtool.oci.source.ImageSource`, normally the layout
cache in front of the registry (:class:`~pkgtool.oci.source.CachedSource`): a pinned image
already in the cache is used without touching the network (a warm build works offline and
never imports HTTP code), and whatever is missing (only the arch's manifest, config and
layers, not the other platforms') is fetched, verified and kept in the cache.  Every pulled
image is tagged in the cache under its reference, so ``pkgtool cache ls`` shows it and
``cache clean --unreferenced`` keeps it.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import load_object
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layer import Layer
from pkgtool.oci.layout import Layout
from pkgtool.oci.manifest import select_platform
from pkgtool.oci.reference import Reference, parse_reference
from pkgtool.oci.source import CachedSource, ImageSource, config_descriptor, read_blob

Progress = Callable[[str], None]
_FETCH_WORKERS = 4


@dataclass(frozen=True)
class PulledImage:
    """One image resolved to the arch's manifest, with its config and its layers."""

    ref: str
    manifest_digest: str
    config: Mapping[str, Any]
    layers: tuple[Layer, ...]

    @property
    def container_config(self) -> Mapping[str, Any]:
        cfg = self.config.get("config")
        return cfg if isinstance(cfg, dict) else {}


def is_pinned(ref: str) -> bool:
    return "@sha256:" in ref


def resolve_image(source: ImageSource, ref: str, arch: str) -> PulledImage:
    """The ``linux/arch`` image ``ref`` names (an index or a single manifest)."""
    reference = _parse(ref)
    root = source.manifest(reference)
    manifest = root
    if root.is_index:
        chosen = select_platform(root, Platform("linux", arch), source=ref)
        manifest = source.manifest(reference.with_digest(chosen.digest))
        if manifest.is_index:
            raise PkgtoolError(f"{ref}: the linux/{arch} entry is another index, not an image")
    elif root.media_type not in mediatypes.MANIFEST_TYPES:
        raise PkgtoolError(f"{ref}: unsupported media type {root.media_type}")
    descriptor = config_descriptor(manifest, what=ref)
    config = load_object(read_blob(source, reference, descriptor, max_size=mediatypes.MAX_MANIFEST_BYTES),
                         what=f"{ref}: image config")
    image_arch = config.get("architecture")
    if not root.is_index and image_arch and image_arch != arch:
        raise PkgtoolError(f"{ref}: image is for {image_arch}, not {arch}")
    layers = Layer.of_image(source, reference, manifest.layers, config, image=ref)
    return PulledImage(ref=ref, manifest_digest=manifest.digest, config=config, layers=tuple(layers))


def _parse(ref: str) -> Reference:
    try:
        return parse_reference(ref)
    except PkgtoolError as exc:
        raise PkgtoolError(f"image {ref!r}: {exc}") from None


def pull_all(refs: Sequence[str], source: ImageSource, arch: str, *, progress: Progress) -> dict[str, PulledImage]:
    """Resolve the unique references concurrently and make their layers local; the first
    failure is raised.  A pinned reference must resolve to its pinned digest."""
    unique = list(dict.fromkeys(refs))

    def one(ref: str) -> PulledImage:
        image = resolve_image(source, ref, arch)
        if isinstance(source, CachedSource):
            _keep_local(source, ref, image)
        return image

    results: dict[str, PulledImage] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=_FETCH_WORKERS) as pool:
        futures = {pool.submit(one, ref): ref for ref in unique}
        for future in concurrent.futures.as_completed(futures):
            ref = futures[future]
            results[ref] = future.result()
            progress(f"fetched {ref}")
    return {ref: results[ref] for ref in unique}


def _keep_local(source: CachedSource, ref: str, image: PulledImage) -> None:
    """Download the image's missing layers now (in this pull's thread, so images download
    in parallel) and tag its root in the cache."""
    for layer in image.layers:
        source.ensure_blob(layer.ref, layer.descriptor)
    reference = _parse(ref)
    root = source.layout.resolve(reference) if reference.digest else source.resolve(reference)
    if root is not None and source.layout.has_blob(root.digest):
        _tag_once(source.layout, ref, root.digest, root)


def _tag_once(layout: Layout, name: str, digest: str, descriptor: Descriptor) -> None:
    current = layout.resolve(name)
    if current is None or current.digest != digest:
        layout.tag(name, descriptor)
