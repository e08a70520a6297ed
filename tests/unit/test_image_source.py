"""The ImageSource suite (tests/sourcesuite.py) against the layout cache, a registry client
and the read-through cache, the last two over a fake registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import fakeregistry
import pytest
from sourcesuite import (  # noqa: F401 - the suite's tests run in this module
    Store,
    build_image,
    corrupt_file,
    push_everything,
    test_a_damaged_blob_never_reads_clean,
    test_blobs_stream_verified,
    test_layers_of_an_image_read_through_any_source,
    test_manifests_come_back_byte_for_byte,
    test_referrers_by_digest,
    test_resolve_a_tag_a_digest_and_nothing,
)

from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.layout import Layout
from pkgtool.oci.reference import parse_reference
from pkgtool.oci.registry import RegistryClient
from pkgtool.oci.source import CachedSource


@pytest.fixture(params=["layout", "registry", "cached"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "layout":
        layout = Layout(tmp_path / "cache")
        layout.ensure()
        image = build_image(layout, parse_reference("registry.test/org/img:v1"))
        yield Store(layout, image, lambda d: corrupt_file(layout.blob_path(d.digest)))
        return
    with fakeregistry.running() as (address, fake):
        src = Layout(tmp_path / "src")
        src.ensure()
        image = build_image(src, parse_reference(f"{address}/org/img:v1"))
        client = RegistryClient(address, retries=1, backoff=0.01)
        push_everything(client, src, image)

        def damage(descriptor: Descriptor) -> Callable[[], None]:
            original = fake.blobs[descriptor.digest]
            fake.blobs[descriptor.digest] = bytes([original[0] ^ 0xFF]) + original[1:]
            return lambda: fake.blobs.__setitem__(descriptor.digest, original)

        if request.param == "registry":
            yield Store(client, image, damage)
        else:
            cache = Layout(tmp_path / "cache")
            cache.ensure()
            yield Store(CachedSource(cache, lambda: client), image, damage, cache=cache)


def test_cached_source_reads_the_cache_offline(tmp_path: Path) -> None:
    """A pinned image already cached needs no registry at all (no client is ever made)."""
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    image = build_image(layout, parse_reference("registry.test/org/img:v1"))
    source = CachedSource(layout, None)
    pinned = image.ref.with_digest(image.index.digest)
    assert source.manifest(pinned).digest == image.index.digest
    descriptor, data = image.layers["amd64"][0]
    with source.blob(pinned, descriptor) as stream:
        assert stream.read() == data
    missing = Descriptor.for_bytes("application/vnd.oci.image.layer.v1.tar", b"not there")
    with pytest.raises(Exception, match="not in the cache, and no registry"):
        source.blob(pinned, missing)
