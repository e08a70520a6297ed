"""Manifest and index (de)serialisation, validation of hostile bytes, platform selection."""

from __future__ import annotations

import json

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest
from pkgtool.oci.manifest import (
    ManifestError,
    build_index,
    build_manifest,
    parse_manifest,
    platform_matches,
    select_platform,
)

CONFIG = Descriptor.for_bytes(mt.OCI_CONFIG, b'{"architecture":"amd64","os":"linux"}')
LAYER = Descriptor.for_bytes(mt.OCI_LAYER_GZIP, b"layer bytes")


def child(arch: str, variant: str = "", os: str = "linux") -> Descriptor:
    return Descriptor.for_bytes(mt.OCI_MANIFEST, f"{os}/{arch}/{variant}".encode(),
                                platform=Platform(os, arch, variant))


def test_manifest_round_trip_is_canonical_and_exact() -> None:
    subject = Descriptor.for_bytes(mt.OCI_MANIFEST, b"subject", annotations={"dropped": "yes"})
    data = build_manifest(CONFIG, [LAYER], annotations={"b": "2", "a": "1"}, subject=subject,
                          artifact_type="application/vnd.example")
    assert data == hashed_json(json.loads(data))
    parsed = parse_manifest(data)
    assert parsed.media_type == mt.OCI_MANIFEST and not parsed.is_index
    assert (parsed.config, parsed.layers) == (CONFIG, (LAYER,))
    assert parsed.children() == [CONFIG, LAYER]
    assert parsed.subject == Descriptor(subject.media_type, subject.digest, subject.size)
    assert parsed.artifact_type == "application/vnd.example"
    assert parsed.annotations == {"a": "1", "b": "2"}
    assert parsed.data is data
    assert parsed.descriptor == Descriptor(mt.OCI_MANIFEST, sha256_digest(data), len(data),
                                           artifact_type="application/vnd.example")
    # Same inputs, same bytes, same digest.
    assert build_manifest(CONFIG, [LAYER], annotations={"a": "1", "b": "2"}, subject=subject,
                          artifact_type="application/vnd.example") == data


def test_index_round_trip_keeps_order_and_platforms() -> None:
    children = [child("amd64"), child("arm64", "v8"), child("s390x")]
    data = build_index(children, annotations={"k": "v"})
    parsed = parse_manifest(data)
    assert parsed.is_index and parsed.media_type == mt.OCI_INDEX
    assert list(parsed.manifests) == children
    assert [d.platform for d in parsed.manifests] == [c.platform for c in children]
    assert parsed.children() == children


def test_docker_types_and_missing_media_type() -> None:
    docker = hashed_json({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
                             "config": CONFIG.to_json(), "layers": [LAYER.to_json()]})
    assert parse_manifest(docker).media_type == mt.DOCKER_MANIFEST
    bare_index = hashed_json({"schemaVersion": 2, "manifests": [child("amd64").to_json()]})
    assert parse_manifest(bare_index).media_type == mt.OCI_INDEX
    assert parse_manifest(bare_index, content_type=mt.DOCKER_MANIFEST_LIST + "; charset=utf-8").media_type == mt.DOCKER_MANIFEST_LIST
    bare_manifest = hashed_json({"schemaVersion": 2, "config": CONFIG.to_json(), "layers": []})
    assert parse_manifest(bare_manifest).media_type == mt.OCI_MANIFEST


def test_artifact_type_falls_back_to_config_media_type() -> None:
    config = Descriptor.for_bytes("application/vnd.example.config", b"{}")
    assert parse_manifest(build_manifest(config, [])).artifact_type == "application/vnd.example.config"
    assert parse_manifest(build_manifest(CONFIG, [])).artifact_type is None


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"<!DOCTYPE html><html><body>hi</body></html>", None, "HTML page"),
        (b'{"schemaVersion": 2}', "text/html; charset=utf-8", "HTML page"),
        (b"\x00\xff garbage", None, "not valid JSON"),
        (b"[1, 2]", None, "not a JSON object"),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.example+json"}', None, "unsupported manifest media type"),
        (b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', None, "schema 1"),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}', None, "schema 1"),
        (b'{"schemaVersion": 2}', None, "unsupported manifest media type"),
        (b'{"schemaVersion": 3, "manifests": []}', None, "schemaVersion is 3"),
        (b'{"schemaVersion": 2, "mediaType": 7}', None, "mediaType is not a string"),
        (b'{"schemaVersion": 2, "mediaType": "' + mt.OCI_MANIFEST.encode() + b'", "layers": []}', None, "no config"),
        (b'{"schemaVersion": 2, "manifests": {"a": 1}}', None, "manifests is not a list"),
        (b'{"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": "sha256:zz", "size": 1}]}', None, "manifests[0]"),
        (b'{"schemaVersion": 2, "manifests": [], "config": {}}', None, "must not have config"),
    ],
)
def test_invalid_documents(data: bytes, content_type: str | None, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, content_type=content_type, source="reg/x:y")
    assert message in str(caught.value) and str(caught.value).startswith("reg/x:y: ")


def test_size_limit() -> None:
    huge = b'{"schemaVersion": 2, "manifests": [], "pad": "' + b"x" * mt.MAX_MANIFEST_BYTES + b'"}'
    with pytest.raises(ManifestError, match="over the 4194304-byte limit"):
        parse_manifest(huge)


def test_index_that_lists_itself() -> None:
    data = build_index([child("amd64")])
    claimed = child("amd64").digest  # as a hostile server could claim by tag
    with pytest.raises(ManifestError, match="lists itself"):
        parse_manifest(data, digest=claimed)
    assert parse_manifest(data, digest=sha256_digest(data)).is_index


def test_build_rejects_wrong_kinds() -> None:
    with pytest.raises(PkgtoolError):
        build_manifest(CONFIG, [], media_type=mt.OCI_INDEX)
    with pytest.raises(PkgtoolError):
        build_index([], media_type=mt.OCI_MANIFEST)


# ---------------------------------------------------------------- platforms


def test_platform_matching_rules() -> None:
    assert platform_matches(Platform("linux", "arm64"), Platform("linux", "arm64", "v8"))
    assert platform_matches(Platform("linux", "arm64", "v8"), Platform("linux", "arm64"))
    assert platform_matches(Platform("linux", "arm", "v7"), Platform("linux", "arm"))
    assert not platform_matches(Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7"))
    assert not platform_matches(Platform("windows", "amd64"), Platform("linux", "amd64"))


def test_select_platform() -> None:
    entries = [child("amd64"), child("arm", "v6"), child("arm", "v7"), child("arm64", "v8"),
               child("unknown", os="unknown")]
    index = parse_manifest(build_index(entries))
    assert select_platform(index, Platform("linux", "amd64")) == entries[0]
    assert select_platform(index, Platform("linux", "arm", "v7")) == entries[2]
    assert select_platform(index, Platform("linux", "arm")) == entries[1]  # publisher's order
    assert select_platform(index, Platform.parse("arm64")) == entries[3]
    with pytest.raises(PkgtoolError) as caught:
        select_platform(index, Platform("linux", "s390x"), source="reg/img:t")
    assert str(caught.value) == (
        "reg/img:t: no image for linux/s390x (available: linux/amd64, linux/arm/v6, "
        "linux/arm/v7, linux/arm64/v8, unknown/unknown)"
    )
    with pytest.raises(PkgtoolError, match="not an index"):
        select_platform(parse_manifest(build_manifest(CONFIG, [])), Platform("linux", "amd64"))
