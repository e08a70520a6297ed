"""Attach cosign signatures, attestations and Sigstore bundles to an image in the real registry.

The stack's Distribution 2.8 has no referrers API, so bundles are found through the fallback
index at tag ``sha256-<hex>``.  What the registry stores is read back independently with
skopeo as well as through pkgtool's client.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.reference import Reference
from pkgtool.oci.referrers import fallback_tag
from pkgtool.oci.registry import RegistryClient
from pkgtool.sign import SignatureError, dsse, keys
from pkgtool.sign.attach import (
    COSIGN_SIGN_PREDICATE_TYPE,
    attach_attestation,
    attach_bundle,
    attestation_tag,
    read_attestations,
    read_bundles,
    read_classic_signatures,
    sign_image,
    signature_tag,
    verify_classic_signature,
)
from pkgtool.sign.bundle import BUNDLE_MEDIA_TYPE, make_bundle, verify_bundle_statement
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE, Subject, intoto_statement

pytestmark = pytest.mark.integration

SLSA = "https://slsa.dev/provenance/v1"


@pytest.fixture
def image(registry: str, unique_repo: str) -> Iterator[tuple[RegistryClient, str, Descriptor]]:
    """A small real image (config + manifest) pushed to a fresh repository."""
    client = RegistryClient(registry)
    config = hashed_json({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}})
    client.push_blob_bytes(unique_repo, config)
    manifest = hashed_json({
        "schemaVersion": 2, "mediaType": mediatypes.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mediatypes.OCI_CONFIG, config).to_json(), "layers": [],
    })
    client.put_manifest(unique_repo, "v1", manifest, mediatypes.OCI_MANIFEST)
    yield client, unique_repo, Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest)
    client.close()


def _skopeo_raw(registry: str, repository: str, tag: str) -> dict[str, Any]:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry}/{repository}:{tag}"],
        check=True, capture_output=True, timeout=60,
    ).stdout
    document: dict[str, Any] = json.loads(out)
    return document


def test_classic_signature_round_trip(
    image: tuple[RegistryClient, str, Descriptor], registry: str
) -> None:
    client, repo, target = image
    key, other = keys.generate_keypair(), keys.generate_keypair()
    reference = f"{registry}/{repo}"
    sign_image(client, repository=repo, docker_reference=reference, digest=target.digest, key=key)
    # Signing again with the same key is idempotent; a second signer's layer is appended.
    sign_image(client, repository=repo, docker_reference=reference, digest=target.digest, key=key)
    sign_image(client, repository=repo, docker_reference=reference, digest=target.digest, key=other)

    stored = _skopeo_raw(registry, repo, signature_tag(target.digest))
    assert [layer["mediaType"] for layer in stored["layers"]] == [
        "application/vnd.dev.cosign.simplesigning.v1+json"
    ] * 2
    assert all("dev.cosignproject.cosign/signature" in layer["annotations"] for layer in stored["layers"])

    signatures = read_classic_signatures(client, Reference(client.registry, repo), digest=target.digest)
    assert len(signatures) == 2
    found = verify_classic_signature(signatures, key.public_key(), digest=target.digest)
    assert json.loads(found.payload)["critical"]["identity"]["docker-reference"] == reference
    with pytest.raises(SignatureError, match="none of 2"):
        verify_classic_signature(signatures, keys.generate_keypair().public_key(), digest=target.digest)


def test_unsigned_image_is_denied(image: tuple[RegistryClient, str, Descriptor]) -> None:
    client, repo, target = image
    signatures = read_classic_signatures(client, Reference(client.registry, repo), digest=target.digest)
    with pytest.raises(SignatureError, match="unsigned"):
        verify_classic_signature(signatures, keys.generate_keypair().public_key(), digest=target.digest)


def _statement(reference: str, digest: str) -> bytes:
    return intoto_statement(
        subjects=[Subject(reference, digest)], predicate_type=SLSA,
        predicate={"buildDefinition": {"buildType": "https://example.invalid/pkgtool"}},
    )


def test_classic_attestation_round_trip(
    image: tuple[RegistryClient, str, Descriptor], registry: str
) -> None:
    client, repo, target = image
    key = keys.generate_keypair()
    envelope = dsse.sign(_statement(f"{registry}/{repo}", target.digest),
                         payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    attach_attestation(client, repository=repo, digest=target.digest, envelope=envelope,
                       predicate_type=SLSA)
    stored = _skopeo_raw(registry, repo, attestation_tag(target.digest))
    (layer,) = stored["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"dev.cosignproject.cosign/signature": "", "predicateType": SLSA}
    (read_back,) = read_attestations(client, Reference(client.registry, repo), digest=target.digest)
    assert dsse.verify(read_back, key.public_key(), payload_type=INTOTO_PAYLOAD_TYPE) == envelope.payload


def test_bundle_referrer_round_trip(
    image: tuple[RegistryClient, str, Descriptor], registry: str
) -> None:
    client, repo, target = image
    key = keys.generate_keypair()
    envelope = dsse.sign(_statement(f"{registry}/{repo}", target.digest),
                         payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    bundle = make_bundle(envelope, key.public_key())
    referrer = attach_bundle(client, repository=repo, subject=target, bundle=bundle,
                             predicate_type=COSIGN_SIGN_PREDICATE_TYPE)

    # Distribution 2.8 stores the referrer manifest byte-exact, subject included.
    stored = json.loads(client.get_manifest_bytes_or_none(repo, referrer.digest) or b"{}")
    assert stored["subject"]["digest"] == target.digest
    assert stored["artifactType"] == BUNDLE_MEDIA_TYPE
    index = _skopeo_raw(registry, repo, fallback_tag(target.digest))
    assert [m["digest"] for m in index["manifests"]] == [referrer.digest]
    assert index["manifests"][0]["artifactType"] == BUNDLE_MEDIA_TYPE

    (read_back,) = read_bundles(client, Reference(client.registry, repo), digest=target.digest)
    assert read_back == bundle
    statement = verify_bundle_statement(read_back, key.public_key(), digest=target.digest)
    assert statement.predicate_type == SLSA
    with pytest.raises(SignatureError, match="not by the given key"):
        verify_bundle_statement(read_back, keys.generate_keypair().public_key(), digest=target.digest)


def test_foreign_content_at_the_signature_tag_is_not_overwritten(
    image: tuple[RegistryClient, str, Descriptor], registry: str
) -> None:
    client, repo, target = image
    index = hashed_json({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []})
    client.put_manifest(repo, signature_tag(target.digest), index, mediatypes.OCI_INDEX)
    with pytest.raises(PkgtoolError, match="not a cosign signature manifest; refusing"):
        sign_image(client, repository=repo, docker_reference=f"{registry}/{repo}",
                   digest=target.digest, key=keys.generate_keypair())
    assert client.get_manifest_bytes_or_none(repo, signature_tag(target.digest)) == index
