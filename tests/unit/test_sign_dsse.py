"""DSSE: PAE bytes, signing, and deny-by-default verification."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pkgtool.sign import SignatureError, dsse, keys
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE, Subject, intoto_statement

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def key() -> keys.PrivateKey:
    return keys.generate_keypair()


@pytest.fixture(scope="module")
def payload() -> bytes:
    return intoto_statement(
        subjects=[Subject("r/a", DIGEST)], predicate_type="https://example.com/p", predicate={}
    )


def test_pae_matches_the_dsse_spec_example() -> None:
    # The worked example from the DSSE protocol document.
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert dsse.pae("t/é", b"\x00\xff") == b"DSSEv1 4 t/\xc3\xa9 2 \x00\xff"
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "


def test_signature_is_der_ecdsa_over_pae(key: keys.PrivateKey, payload: bytes) -> None:
    envelope = dsse.sign(payload, payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    (signature,) = envelope.signatures
    assert signature.sig[0] == 0x30  # ASN.1 SEQUENCE: DER, not raw r||s
    key.public_key().verify(
        signature.sig, dsse.pae(INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256())
    )
    assert dsse.verify(envelope, key.public_key(), payload_type=INTOTO_PAYLOAD_TYPE) == payload


def test_envelope_json_round_trip(key: keys.PrivateKey, payload: bytes) -> None:
    envelope = dsse.sign(payload, payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    data = envelope.to_json()
    doc = json.loads(data)
    assert list(doc) == ["payloadType", "payload", "signatures"]
    assert doc["signatures"][0]["keyid"] == ""
    assert base64.b64decode(doc["payload"]) == payload
    assert dsse.Envelope.from_json(data) == envelope


def test_url_safe_unpadded_base64_is_accepted(key: keys.PrivateKey) -> None:
    envelope = dsse.sign(b"\xfb\xff\xfe?", payload_type="t", key=key)
    doc = envelope.to_dict()
    doc["payload"] = base64.urlsafe_b64encode(envelope.payload).decode().rstrip("=")
    assert dsse.Envelope.from_dict(doc).payload == envelope.payload


def test_another_key_is_rejected(key: keys.PrivateKey, payload: bytes) -> None:
    envelope = dsse.sign(payload, payload_type=INTOTO_PAYLOAD_TYPE, key=keys.generate_keypair())
    with pytest.raises(SignatureError, match="no DSSE signature verifies with key"):
        dsse.verify(envelope, key.public_key())


def test_tampered_payload_is_rejected(key: keys.PrivateKey, payload: bytes) -> None:
    envelope = dsse.sign(payload, payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    tampered = dsse.Envelope(
        envelope.payload_type, payload.replace(b"ab", b"cd", 1), envelope.signatures
    )
    with pytest.raises(SignatureError, match="payload was altered"):
        dsse.verify(tampered, key.public_key())


def test_payload_type_is_bound_into_the_signature(key: keys.PrivateKey, payload: bytes) -> None:
    envelope = dsse.sign(payload, payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    retyped = dsse.Envelope("application/json", envelope.payload, envelope.signatures)
    with pytest.raises(SignatureError):
        dsse.verify(retyped, key.public_key())
    with pytest.raises(SignatureError, match=r"expected 'application/vnd\.in-toto"):
        dsse.verify(retyped, key.public_key(), payload_type=INTOTO_PAYLOAD_TYPE)


def test_unsigned_envelope_is_denied(key: keys.PrivateKey, payload: bytes) -> None:
    with pytest.raises(SignatureError, match="no signatures"):
        dsse.verify(dsse.Envelope(INTOTO_PAYLOAD_TYPE, payload, ()), key.public_key())


def test_one_good_signature_among_bad_ones_passes(key: keys.PrivateKey, payload: bytes) -> None:
    good = dsse.sign(payload, payload_type="t", key=key).signatures[0]
    junk = dsse.Signature(b"\x30\x00", "other")
    envelope = dsse.Envelope("t", payload, (junk, good))
    assert dsse.verify(envelope, key.public_key()) == payload


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ([], "not a JSON object"),
        ({"payload": "", "signatures": []}, "lacks payloadType"),
        ({"payloadType": "t", "payload": "***", "signatures": []}, "not valid base64"),
        ({"payloadType": "t", "payload": "", "signatures": {}}, "signatures list"),
        ({"payloadType": "t", "payload": "", "signatures": [{"sig": 5}]}, "not a string"),
        ({"payloadType": "t", "payload": "", "signatures": [{"sig": ""}] * 17}, "more than 16"),
    ],
)
def test_malformed_envelopes(document: object, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        dsse.Envelope.from_json(json.dumps(document).encode())
