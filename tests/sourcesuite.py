"""One test suite for every ImageSource: the layout cache, a registry client, and the cache in
front of a registry must answer the same questions the same way.

A test module provides a ``store`` fixture returning a :class:`Store`: the source under test,
the reference of a two-platform image it holds (with a bundle referrer on the index), a way
to damage a blob as that source serves it, and whether reading through it fills a cache.
``tests/unit/test_image_source.py`` runs the suite against the three stores over a fake
registry, ``tests/integration/test_image_source_registry.py`` against the real one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layer import Layer
from pkgtool.oci.layout import Layout
from pkgtool.oci.manifest import build_index, build_manifest
from pkgtool.oci.reference import Reference
from pkgtool.oci.referrers import fallback_tag
from pkgtool.oci.source import ImageSource, NotFoundError, read_blob

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@dataclass
class Image:
    ref: Reference  # tagged
    index: Descriptor
    manifests: dict[str, Descriptor]
    layers: dict[str, list[tuple[Descriptor, bytes]]]
    configs: dict[str, dict[str, object]]
    referrer: Descriptor


@dataclass
class Store:
    source: ImageSource
    image: Image
    damage: Callable[[Descriptor], Callable[[], None]]  # damage(d) -> undo
    cache: Layout | None = None  # filled by reads through the source, if it is a read-through


def build_image(layout: Layout, ref: Reference, *, arches: tuple[str, ...] = ("amd64", "arm64")) -> Image:
    """A random two-platform image in ``layout``, tagged at ``ref``, with a bundle referrer
    recorded in the OCI fallback index ``sha256-<hex>`` (as Distribution 2.8 needs)."""
    import io
    import tarfile

    manifests: dict[str, Descriptor] = {}
    layers: dict[str, list[tuple[Descriptor, bytes]]] = {}
    configs: dict[str, dict[str, object]] = {}
    for arch in arches:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            payload = os.urandom(70_000)
            info = tarfile.TarInfo(f"{arch}/data")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
        data = buf.getvalue()
        layout.write_blob(data)
        layer = Descriptor.for_bytes(mt.OCI_LAYER, data)
        config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.digest]}}
        config_bytes = hashed_json(config)
        layout.write_blob(config_bytes)
        manifest = build_manifest(Descriptor.for_bytes(mt.OCI_CONFIG, config_bytes), [layer])
        layout.write_blob(manifest)
        manifests[arch] = Descriptor.for_bytes(mt.OCI_MANIFEST, manifest, platform=Platform("linux", arch))
        layers[arch] = [(layer, data)]
        configs[arch] = config
    index_bytes = build_index(list(manifests.values()))
    layout.write_blob(index_bytes)
    index = Descriptor.for_bytes(mt.OCI_INDEX, index_bytes)
    layout.tag(str(ref), index)
    bundle = b'{"mediaType": "' + BUNDLE_TYPE.encode() + b'"}'
    layout.write_blob(bundle)
    layout.write_blob(b"{}")
    referrer_bytes = hashed_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": Descriptor.for_bytes(mt.OCI_EMPTY, b"{}").digest, "size": 2},
        "layers": [Descriptor.for_bytes(BUNDLE_TYPE, bundle).to_json()],
        "subject": Descriptor(mt.OCI_INDEX, index.digest, index.size).to_json(),
    })
    layout.write_blob(referrer_bytes)
    referrer = Descriptor.for_bytes(mt.OCI_MANIFEST, referrer_bytes, artifact_type=BUNDLE_TYPE)
    fallback = build_index([referrer])
    layout.write_blob(fallback)
    layout.tag(str(ref.with_tag(fallback_tag(index.digest))), Descriptor.for_bytes(mt.OCI_INDEX, fallback))
    return Image(ref, index, manifests, layers, configs, referrer)


def push_everything(client: object, layout: Layout, image: Image) -> None:
    """Push the image and its referrer (with its fallback index) from ``layout``."""
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.oci.transfer import push

    assert isinstance(client, RegistryClient)
    push(client, layout, image.index, str(image.ref))
    untagged = Reference(image.ref.registry, image.ref.repository, digest=image.referrer.digest)
    push(client, layout, image.referrer, str(untagged))
    client.add_referrer(image.ref.repository, image.index, image.referrer)


# --------------------------------------------------------------------------- the suite


def test_resolve_a_tag_a_digest_and_nothing(store: Store) -> None:
    image, source = store.image, store.source
    assert source.resolve(image.ref).digest == image.index.digest  # type: ignore[union-attr]
    by_digest = source.resolve(image.ref.with_digest(image.manifests["arm64"].digest))
    assert by_digest is not None and (by_digest.digest, by_digest.media_type) == (
        image.manifests["arm64"].digest, mt.OCI_MANIFEST)
    assert source.resolve(image.ref.with_tag("no-such-tag")) is None


def test_manifests_come_back_byte_for_byte(store: Store) -> None:
    image, source = store.image, store.source
    index = source.manifest(image.ref)
    assert index.is_index and index.digest == image.index.digest
    assert [m.digest for m in index.manifests] == [d.digest for d in image.manifests.values()]
    child = source.manifest(image.ref.with_digest(image.manifests["amd64"].digest))
    assert not child.is_index and [d.digest for d in child.layers] == [d.digest for d, _ in image.layers["amd64"]]
    with pytest.raises(NotFoundError):
        source.manifest(image.ref.with_tag("no-such-tag"))


def test_blobs_stream_verified(store: Store) -> None:
    image, source = store.image, store.source
    descriptor, data = image.layers["arm64"][0]
    with source.blob(image.ref, descriptor) as stream:
        assert stream.read() == data
    if store.cache is not None:
        assert store.cache.has_blob(descriptor.digest)  # read through, kept


def test_a_damaged_blob_never_reads_clean(store: Store) -> None:
    image, source = store.image, store.source
    descriptor, _ = image.layers["amd64"][0]
    undo = store.damage(descriptor)
    try:
        with pytest.raises(PkgtoolError, match="hashes to"), source.blob(image.ref, descriptor) as stream:
            while stream.read(1 << 16):
                pass
    finally:
        undo()
    if store.cache is not None:
        assert not store.cache.has_blob(descriptor.digest)  # nothing unverified was kept


def test_layers_of_an_image_read_through_any_source(store: Store) -> None:
    image, source = store.image, store.source
    manifest = source.manifest(image.ref.with_digest(image.manifests["amd64"].digest))
    config = read_blob(source, image.ref, manifest.config, max_size=1 << 20)  # type: ignore[arg-type]
    assert config == hashed_json(image.configs["amd64"])
    (layer,) = Layer.of_image(source, image.ref, manifest.layers, image.configs["amd64"], image="img")
    assert [entry.path for entry in layer.entries()] == ["amd64/data"]


def test_referrers_by_digest(store: Store) -> None:
    image, source = store.image, store.source
    found = source.referrers(image.ref.with_digest(image.index.digest), artifact_type=BUNDLE_TYPE)
    assert [d.digest for d in found] == [image.referrer.digest]
    assert source.referrers(image.ref.with_digest(image.index.digest), artifact_type="application/x-other") == []
    assert source.referrers(image.ref.with_digest(image.manifests["amd64"].digest)) == []


def corrupt_file(path: Path) -> Callable[[], None]:
    """Flip the first byte of a file (keeping its length); returns the undo."""
    original = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])
    return lambda: path.write_bytes(original)
