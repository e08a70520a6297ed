"""Sigstore bundle v0.3 (key-based): JSON shape, parsing and verification."""

from __future__ import annotations

import base64
import json

import pytest

from pkgtool.sign import SignatureError, dsse, keys
from pkgtool.sign.bundle import (
    BUNDLE_MEDIA_TYPE,
    make_bundle,
    parse_bundle,
    verify_bundle,
    verify_bundle_statement,
)
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE, Subject, intoto_statement

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


@pytest.fixture(scope="module")
def key() -> keys.PrivateKey:
    return keys.generate_keypair()


def _bundle(key: keys.PrivateKey, digest: str = DIGEST) -> bytes:
    statement = intoto_statement(
        subjects=[Subject("127.0.0.1:5000/org/pkg", digest)],
        predicate_type="https://slsa.dev/provenance/v1", predicate={"buildDefinition": {}},
    )
    envelope = dsse.sign(statement, payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    return make_bundle(envelope, key.public_key())


def test_bundle_json_shape(key: keys.PrivateKey) -> None:
    doc = json.loads(_bundle(key))
    assert list(doc) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    assert doc["mediaType"] == BUNDLE_MEDIA_TYPE == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"] == {"publicKey": {"hint": keys.public_key_hint(key)}}
    envelope = doc["dsseEnvelope"]
    assert list(envelope) == ["payload", "payloadType", "signatures"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert len(envelope["signatures"]) == 1 and list(envelope["signatures"][0]) == ["sig"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["digest"] == {"sha256": "ab" * 32}


def test_verify_bundle_statement(key: keys.PrivateKey) -> None:
    statement = verify_bundle_statement(_bundle(key), key.public_key(), digest=DIGEST)
    assert statement.predicate_type == "https://slsa.dev/provenance/v1"


def test_bundle_by_another_key_names_both_keys(key: keys.PrivateKey) -> None:
    other = keys.generate_keypair()
    with pytest.raises(SignatureError) as exc:
        verify_bundle(_bundle(other), key.public_key())
    assert str(exc.value) == (
        f"bundle was signed by key {keys.public_key_hint(other)}, not by the given key "
        f"{keys.public_key_hint(key)}"
    )


def test_bundle_about_another_digest_is_rejected(key: keys.PrivateKey) -> None:
    with pytest.raises(SignatureError, match=f"is about {OTHER}, not about {DIGEST}"):
        verify_bundle_statement(_bundle(key, OTHER), key.public_key(), digest=DIGEST)


def test_tampered_bundle_payload_is_rejected(key: keys.PrivateKey) -> None:
    doc = json.loads(_bundle(key))
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "cd" * 32
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(SignatureError, match="payload was altered"):
        verify_bundle_statement(json.dumps(doc).encode(), key.public_key(), digest=OTHER)


def test_parse_bundle_round_trip(key: keys.PrivateKey) -> None:
    bundle = parse_bundle(_bundle(key))
    assert bundle.key_hint == keys.public_key_hint(key)
    assert bundle.envelope.payload_type == INTOTO_PAYLOAD_TYPE


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle.v0.1+json"), "media type"),
        (lambda d: d.pop("verificationMaterial"), "lacks verificationMaterial"),
        (lambda d: d.update(verificationMaterial={"certificate": {"rawBytes": ""}}), "keyless"),
        (lambda d: d.pop("dsseEnvelope"), "no DSSE envelope"),
        (lambda d: d["dsseEnvelope"].update(signatures=[]), "exactly one DSSE signature, found 0"),
        (lambda d: d["dsseEnvelope"]["signatures"].append({"sig": "AA=="}), "found 2"),
    ],
)
def test_malformed_bundles(key: keys.PrivateKey, mutate: object, reason: str) -> None:
    doc = json.loads(_bundle(key))
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(SignatureError, match=reason):
        parse_bundle(json.dumps(doc).encode())


def test_make_bundle_needs_exactly_one_signature(key: keys.PrivateKey) -> None:
    with pytest.raises(ValueError):
        make_bundle(dsse.Envelope("t", b"x", ()), key.public_key())
