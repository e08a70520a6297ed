"""SLSA provenance v1 from BuildInfo, and what verification reads back from it."""

from __future__ import annotations

import datetime
import json

import pytest
import signkit

from pkgtool.errors import UsageError
from pkgtool.sign import SignatureError
from pkgtool.sign.provenance import (
    BUILD_TYPE,
    REDACTED,
    BuildInfo,
    provenance_predicate,
    read_provenance,
)

REGISTRY = "127.0.0.1:5000"


def _build(**overrides: object) -> BuildInfo:
    info = signkit.build_info(registry=REGISTRY, **overrides)
    assert isinstance(info, BuildInfo)
    return info


def test_predicate_has_the_slsa_v1_fields() -> None:
    predicate = provenance_predicate(_build())
    definition = predicate["buildDefinition"]
    assert definition["buildType"] == BUILD_TYPE
    external = definition["externalParameters"]
    assert external["package"] == "pkg/test"
    assert external["source"] == {"repository": "https://github.com/pkgtool/pkgtool",
                                  "revision": "0123456789abcdef0123456789abcdef01234567"}
    assert external["buildConfig"] == {"path": "pkg/test/build.yml", "digest": {"sha256": "ab" * 32}}
    assert external["platforms"] == ["linux/amd64", "linux/arm64"]
    assert external["buildArgs"] == {"DEBIAN_SUITE": "bookworm"}
    source, base = definition["resolvedDependencies"]
    assert source == {"name": "source", "digest": {"pkgtoolContentHash": "c0ffee" * 6 + "c0ff"},
                      "uri": "git+https://github.com/pkgtool/pkgtool@0123456789abcdef0123456789abcdef01234567"}
    assert base == {"name": "base", "uri": f"oci://{REGISTRY}/pkgtool/base:abc", "digest": {"sha256": "ba" * 32},
                    "annotations": {"reference": f"{REGISTRY}/pkgtool/base:abc"}}
    details = predicate["runDetails"]
    assert details["builder"]["id"] == "https://pkgtool.dev/builders/test"
    assert details["metadata"] == {"invocationId": "test-run-1", "startedOn": "2024-01-02T03:04:05Z",
                                   "finishedOn": "2024-01-02T03:09:00Z"}


def test_unknown_source_is_left_out_not_invented() -> None:
    predicate = provenance_predicate(_build(source=None))
    assert predicate["buildDefinition"]["externalParameters"]["source"] == {}
    assert predicate["buildDefinition"]["resolvedDependencies"][0]["uri"] == "pkgtool:source-tree"
    assert read_provenance(predicate).source_repository is None


def test_secrets_never_reach_the_provenance() -> None:
    predicate = provenance_predicate(_build(
        source_repository="https://oauth2:ghp_SECRETTOKEN@github.com/pkgtool/pkgtool.git",
        build_args={"NPM_TOKEN": "s3cr3t-npm", "DB_PASSWORD": "hunter2", "VERSION": "1.2"},
    ))
    text = json.dumps(predicate)
    for secret in ("ghp_SECRETTOKEN", "oauth2", "s3cr3t-npm", "hunter2"):
        assert secret not in text
    assert predicate["buildDefinition"]["externalParameters"]["buildArgs"] == {
        "DB_PASSWORD": REDACTED, "NPM_TOKEN": REDACTED, "VERSION": "1.2",
    }


def test_build_info_is_validated() -> None:
    with pytest.raises(UsageError, match="relative"):
        _build(package="/abs/pkg")
    with pytest.raises(UsageError, match="materials"):
        _build(materials={"pkg/x": "not-a-digest"})
    with pytest.raises(UsageError, match="timezone-aware"):
        _build(started_on=datetime.datetime(2024, 1, 1))
    with pytest.raises(Exception, match="invalid digest"):
        _build(base_images={f"{REGISTRY}/pkgtool/base:1": "sha256:short"})


def test_read_provenance_round_trip_and_malformed() -> None:
    facts = read_provenance(provenance_predicate(_build()))
    assert facts.builder_id == "https://pkgtool.dev/builders/test"
    assert facts.base_images == ((f"oci://{REGISTRY}/pkgtool/base:abc", "sha256:" + "ba" * 32),)
    assert facts.invocation_id == "test-run-1"
    with pytest.raises(SignatureError, match="lacks buildDefinition"):
        read_provenance({"runDetails": {}})
    with pytest.raises(SignatureError, match=r"builder\.id"):
        read_provenance({"buildDefinition": {"buildType": "x"}, "runDetails": {"builder": {}}})
