"""Registry shapes for signatures: cosign tags, layer media types, annotations, referrers."""

from __future__ import annotations

import base64
import json

import pytest

from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, sha256_digest
from pkgtool.oci.referrers import fallback_tag
from pkgtool.sign import SignatureError, dsse, keys
from pkgtool.sign.attach import (
    EMPTY_CONFIG,
    ClassicSignature,
    attestation_layer,
    attestation_tag,
    bundle_referrer,
    cosign_layers_manifest,
    signature_layer,
    signature_tag,
    verify_classic_signature,
)
from pkgtool.sign.payloads import simple_signing_payload

HEX = "0f" * 32
DIGEST = "sha256:" + HEX


def test_tags() -> None:
    assert signature_tag(DIGEST) == f"sha256-{HEX}.sig"
    assert attestation_tag(DIGEST) == f"sha256-{HEX}.att"
    assert fallback_tag(DIGEST) == f"sha256-{HEX}"
    with pytest.raises(Exception, match="invalid digest"):
        signature_tag("sha256:nothex")


def test_classic_signature_manifest_shape() -> None:
    key = keys.generate_keypair()
    payload = simple_signing_payload(docker_reference="127.0.0.1:5000/a/b", manifest_digest=DIGEST)
    signature = dsse.sign_bytes(key, payload)
    manifest, config = cosign_layers_manifest([signature_layer(payload, signature)])
    doc = json.loads(manifest)
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == mediatypes.OCI_MANIFEST
    assert doc["config"] == {
        "mediaType": mediatypes.OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)
    }
    (layer,) = doc["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["digest"] == sha256_digest(payload) and layer["size"] == len(payload)
    assert layer["annotations"] == {
        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode()
    }
    assert json.loads(config)["rootfs"] == {"type": "layers", "diff_ids": [sha256_digest(payload)]}
    # Deterministic: the same signatures give the same manifest digest.
    assert cosign_layers_manifest([signature_layer(payload, signature)])[0] == manifest


def test_classic_attestation_layer_keeps_empty_signature_annotation() -> None:
    envelope = dsse.sign(b"{}", payload_type="application/vnd.in-toto+json", key=keys.generate_keypair())
    blob = envelope.to_json()
    manifest, _ = cosign_layers_manifest(
        [attestation_layer(blob, predicate_type="https://slsa.dev/provenance/v1")]
    )
    (layer,) = json.loads(manifest)["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {
        "dev.cosignproject.cosign/signature": "",
        "predicateType": "https://slsa.dev/provenance/v1",
    }


def test_bundle_referrer_manifest() -> None:
    subject = Descriptor(mediatypes.OCI_INDEX, DIGEST, 1234)
    bundle = b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}'
    artifact = bundle_referrer(bundle, subject=subject, predicate_type="https://slsa.dev/provenance/v1")
    doc = json.loads(artifact.manifest)
    assert doc["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert doc["layers"] == [{
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "digest": sha256_digest(bundle), "size": len(bundle),
    }]
    assert doc["subject"] == {"mediaType": mediatypes.OCI_INDEX, "digest": DIGEST, "size": 1234}
    assert doc["annotations"] == {
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://slsa.dev/provenance/v1",
    }
    assert artifact.blobs == (EMPTY_CONFIG, bundle)
    descriptor = artifact.descriptor
    assert descriptor.digest == sha256_digest(artifact.manifest)
    assert descriptor.artifact_type == doc["artifactType"]


def test_verify_classic_signature_checks_key_and_digest() -> None:
    key, other = keys.generate_keypair(), keys.generate_keypair()
    payload = simple_signing_payload(docker_reference="r/a", manifest_digest=DIGEST)
    good = ClassicSignature(payload, dsse.sign_bytes(key, payload))
    assert verify_classic_signature([good], key.public_key(), digest=DIGEST) == good

    with pytest.raises(SignatureError, match="unsigned"):
        verify_classic_signature([], key.public_key(), digest=DIGEST)
    with pytest.raises(SignatureError, match="none of 1 cosign signature"):
        verify_classic_signature([good], other.public_key(), digest=DIGEST)
    elsewhere = "sha256:" + "ee" * 32
    with pytest.raises(SignatureError, match="is for another digest"):
        verify_classic_signature([good], key.public_key(), digest=elsewhere)
    tampered = ClassicSignature(payload.replace(b"r/a", b"r/b"), good.signature)
    with pytest.raises(SignatureError, match="none of 1"):
        verify_classic_signature([tampered], key.public_key(), digest=DIGEST)
