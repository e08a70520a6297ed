"""Pull and push between the layout cache and a (fake) registry, and the client's
resilience: every kind of fault a flaky network or registry produces is retried, resumed or
restarted, and nothing that failed verification is ever kept."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import fakeregistry
import pytest
from sourcesuite import Image, build_image

from pkgtool.errors import DigestMismatchError, PkgtoolError, RegistryError
from pkgtool.oci import layout_gc
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layout import Layout
from pkgtool.oci.reference import parse_reference
from pkgtool.oci.registry import RegistryClient
from pkgtool.oci.transfer import pull, push


@pytest.fixture
def fake() -> Iterator[tuple[RegistryClient, fakeregistry.Store]]:
    with fakeregistry.running() as (address, store), RegistryClient(
        address, retries=6, backoff=0.001, max_backoff=0.01
    ) as client:
        yield client, store


def _pushed(client: RegistryClient, tmp_path: Path) -> tuple[Layout, Image]:
    src = Layout(tmp_path / "src")
    src.ensure()
    image = build_image(src, parse_reference(f"{client.registry}/org/img:v1"))
    push(client, src, image.index, str(image.ref))
    return src, image


def _temp_files(layout: Layout) -> list[str]:
    return [p.name for p in layout.blobs_dir.iterdir() if p.name.startswith(".pkgtool-tmp")]


def test_push_uploads_blobs_before_manifests_and_skips_what_is_there(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path
) -> None:
    client, store = fake
    src, image = _pushed(client, tmp_path)
    puts = [(m, p) for m, p in store.seen if m == "PUT"]
    first_manifest = next(i for i, (_m, p) in enumerate(puts) if "/manifests/" in p)
    assert all("/blobs/uploads/" in p for _m, p in puts[:first_manifest])
    assert puts[-1][1].endswith("/manifests/v1")  # the tag last
    store.seen.clear()
    push(client, src, image.index, str(image.ref))
    assert not any("/blobs/uploads/" in p for _m, p in store.seen)


def test_pull_of_one_platform_fetches_only_its_blobs(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path
) -> None:
    client, _store = fake
    _src, image = _pushed(client, tmp_path)
    dst = Layout(tmp_path / "dst")
    root = pull(client, str(image.ref), dst, platforms=[Platform("linux", "arm64")])
    assert root.digest == image.index.digest and dst.resolve(str(image.ref)) == root
    assert dst.has_blob(image.layers["arm64"][0][0].digest)
    assert not dst.has_blob(image.layers["amd64"][0][0].digest)


def test_a_flaky_registry_is_survived(fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path) -> None:
    """Resets, 503s, bodies cut short and bodies corrupted, on every kind of request, at
    fixed seeds: the pull still ends with exactly the registry's bytes."""
    client, store = fake
    _src, image = _pushed(client, tmp_path)
    rng = random.Random(7)

    def fault(method: str, path: str, attempt: int) -> str | None:
        if attempt >= 4:
            return None  # faults are transient: a few attempts always get through
        roll = rng.random()
        return "reset" if roll < 0.15 else "503" if roll < 0.3 else "truncate" if roll < 0.45 else \
            "corrupt" if roll < 0.6 else None

    store.fault = fault
    dst = Layout(tmp_path / "dst")
    assert pull(client, str(image.ref), dst).digest == image.index.digest
    assert layout_gc.verify(dst) == [] and _temp_files(dst) == []


@pytest.mark.parametrize("honour_range", [True, False])
def test_a_broken_blob_download_resumes_or_restarts(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path, honour_range: bool
) -> None:
    """A 5 MiB blob whose first GET breaks off halfway: resumed with a Range request where the
    registry honours Range, downloaded again from zero where it does not."""
    client, store = fake
    data = random.Random(1).randbytes(5 * 1024 * 1024)
    digest = client.push_blob_bytes("org/big", data)
    store.honour_range = honour_range
    store.fault = lambda m, p, n: "truncate" if m == "GET" and p.endswith(digest) and n == 0 else None
    store.ranges.clear()
    cache = Layout(tmp_path / "cache")
    cache.ensure()
    client.download_blob("org/big", Descriptor.for_bytes(mt.OCI_LAYER, data), cache)
    assert cache.read_blob(digest) == data
    first, second, *rest = store.ranges
    assert first == "" and second.startswith("bytes=") and int(second[6:-1]) >= 1024 * 1024
    assert rest == ([] if honour_range else [""])  # no Range support: one more GET from zero


def test_a_blob_that_never_verifies_ends_in_one_line_and_is_not_kept(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path
) -> None:
    client, store = fake
    _src, image = _pushed(client, tmp_path)
    layer = image.layers["arm64"][0][0]
    original = store.blobs[layer.digest]
    store.blobs[layer.digest] = bytes([original[0] ^ 1]) + original[1:]
    dst = Layout(tmp_path / "dst")
    with pytest.raises(DigestMismatchError) as caught:
        pull(client, str(image.ref), dst)
    message = str(caught.value)
    assert message.startswith(f"registry {client.registry}: GET blob org/img@{layer.digest}: ") and "\n" not in message
    assert "hashes to" in message and "(gave up after 7 attempts)" in message
    assert not dst.has_blob(layer.digest) and dst.list_refs() == [] and _temp_files(dst) == []


def test_uploads_restart_their_session_when_it_breaks(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path
) -> None:
    client, store = fake
    uploads: list[str] = []

    def fault(method: str, path: str, attempt: int) -> str | None:
        if method == "PUT" and "/blobs/uploads/" in path:
            uploads.append(path)
            return "reset" if len(uploads) == 1 else None
        return None

    store.fault = fault
    src = Layout(tmp_path / "src")
    src.ensure()
    image = build_image(src, parse_reference(f"{client.registry}/org/img:v1"), arches=("amd64",))
    push(client, src, image.index, str(image.ref))
    assert len({u.rsplit("/", 1)[-1] for u in uploads}) == len(uploads)  # a new session each time
    assert client.head_manifest("org/img", "v1") is not None


def test_a_registry_that_is_down_fails_in_bounded_time(tmp_path: Path) -> None:
    with fakeregistry.running() as (address, store):
        store.fault = lambda m, p, n: "503"
        client = RegistryClient(address, retries=3, backoff=0.001, max_backoff=0.01)
        with pytest.raises(RegistryError, match=r"HTTP 503.*\(gave up after 4 attempts\)$"):
            client.get_manifest("org/img", "v1")


def test_a_total_time_bound_stops_retries_early(tmp_path: Path) -> None:
    with fakeregistry.running() as (address, store):
        store.fault = lambda m, p, n: "503"
        client = RegistryClient(address, retries=50, backoff=0.05, max_backoff=0.05, max_total=0.2)
        with pytest.raises(PkgtoolError, match=r"gave up after \d attempts"):
            client.get_manifest("org/img", "v1")
        assert len(store.seen) < 10
