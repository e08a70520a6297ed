"""The ImageSource suite (tests/sourcesuite.py) against the stack's real registry: the
registry client itself, and the layout cache in front of it."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

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

pytestmark = pytest.mark.integration


@pytest.fixture(params=["registry", "cached"])
def store(request: pytest.FixtureRequest, registry: str, registry_storage: Path, tmp_path: Path) -> Iterator[Store]:
    src = Layout(tmp_path / "src")
    src.ensure()
    image = build_image(src, parse_reference(f"{registry}/pkgtool-test/source-{secrets.token_hex(4)}:v1"))
    client = RegistryClient(registry, retries=1, backoff=0.01)
    push_everything(client, src, image)

    def damage(descriptor: Descriptor) -> Callable[[], None]:
        hexdigest = descriptor.digest.removeprefix("sha256:")
        return corrupt_file(registry_storage / "blobs" / "sha256" / hexdigest[:2] / hexdigest / "data")

    if request.param == "registry":
        yield Store(client, image, damage)
    else:
        cache = Layout(tmp_path / "cache")
        cache.ensure()
        yield Store(CachedSource(cache, lambda: client), image, damage, cache=cache)
