"""The merge-safe index push under the interleaving that loses an arch to a plain
read-modify-write: two writers read the same (empty) index, and the later write would drop
the earlier writer's arch.  A fake registry replays that interleaving deterministically;
the real two-process race runs in tests/integration/test_builders.py."""

from __future__ import annotations

from collections.abc import Callable

from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.manifest import Manifest, parse_manifest
from pkgtool.pkgbuild.push import push_index


def manifest(arch: str) -> Descriptor:
    return Descriptor(mediatypes.OCI_MANIFEST, sha256_digest(arch.encode()), 100, platform=Platform("linux", arch))


class FakeRegistry:
    """Tags -> (media type, bytes); ``before_put`` runs once before the first index PUT."""

    registry = "fake"

    def __init__(self) -> None:
        self.tags: dict[str, tuple[str, bytes]] = {}
        self.before_put: Callable[[], None] | None = None

    def get_manifest_or_none(self, repository: str, reference: str) -> Manifest | None:
        found = self.tags.get(reference)
        return None if found is None else parse_manifest(found[1], content_type=found[0])

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        found = self.tags.get(reference)
        return None if found is None else Descriptor(found[0], sha256_digest(found[1]), len(found[1]))

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Descriptor:
        if self.before_put is not None and media_type == mediatypes.OCI_INDEX:
            hook, self.before_put = self.before_put, None
            hook()
        self.tags[reference] = (media_type, data)
        return Descriptor(media_type, sha256_digest(data), len(data))

    def push_arch(self, tag: str, arch: str) -> Descriptor:
        data = f'{{"schemaVersion":2,"mediaType":"{mediatypes.OCI_MANIFEST}","config":{{"mediaType":"{mediatypes.OCI_CONFIG}",' \
               f'"digest":"{sha256_digest(arch.encode())}","size":2}},"layers":[]}}'.encode()
        self.tags[f"{tag}-{arch}"] = (mediatypes.OCI_MANIFEST, data)
        return Descriptor(mediatypes.OCI_MANIFEST, sha256_digest(data), len(data), platform=Platform("linux", arch))


def listed(registry: FakeRegistry, tag: str) -> list[str]:
    index = registry.get_manifest_or_none("r", tag)
    assert index is not None
    return [m.platform.architecture for m in index.manifests if m.platform]


def test_a_writer_that_runs_in_between_sees_the_other_arch_by_its_tag() -> None:
    registry = FakeRegistry()
    amd64 = registry.push_arch("t", "amd64")
    arm64 = registry.push_arch("t", "arm64")

    # Writer A has read the empty index and is about to write {amd64}; meanwhile writer B
    # runs to completion and writes {arm64}.  A's write then replaces B's index.
    def writer_b() -> None:
        push_index(registry, repository="r", tag="t", ours={"arm64": arm64}, arches=("amd64", "arm64"))  # type: ignore[arg-type]
        assert listed(registry, "t") == ["amd64", "arm64"]  # B already saw A's per-arch tag

    registry.before_put = writer_b
    result = push_index(registry, repository="r", tag="t", ours={"amd64": amd64},  # type: ignore[arg-type]
                        arches=("amd64", "arm64"))
    assert listed(registry, "t") == ["amd64", "arm64"]
    assert result.digest == registry.head_manifest("r", "t").digest  # type: ignore[union-attr]


def test_the_last_writer_restores_an_arch_it_did_not_see_when_it_read() -> None:
    registry = FakeRegistry()
    amd64 = registry.push_arch("t", "amd64")

    # A reads (nothing), then before A writes, B pushes its arch and its index; A's first
    # write drops arm64, and A's next pass finds arm64's tag and merges it back.
    def writer_b() -> None:
        arm64 = registry.push_arch("t", "arm64")
        push_index(registry, repository="r", tag="t", ours={"arm64": arm64}, arches=("amd64", "arm64"))  # type: ignore[arg-type]

    registry.before_put = writer_b
    push_index(registry, repository="r", tag="t", ours={"amd64": amd64}, arches=("amd64", "arm64"))  # type: ignore[arg-type]
    assert listed(registry, "t") == ["amd64", "arm64"]


def test_unchanged_index_is_not_rewritten() -> None:
    registry = FakeRegistry()
    amd64 = registry.push_arch("t", "amd64")
    first = push_index(registry, repository="r", tag="t", ours={"amd64": amd64}, arches=("amd64",))  # type: ignore[arg-type]
    registry.before_put = lambda: (_ for _ in ()).throw(AssertionError("rewrote an unchanged index"))
    again = push_index(registry, repository="r", tag="t", ours={"amd64": amd64}, arches=("amd64",))  # type: ignore[arg-type]
    assert again.digest == first.digest
