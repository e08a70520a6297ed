"""Sigstore bundle v0.3 for key-based signing (no Fulcio certificate, no Rekor entry).

The JSON is the protobuf-specs ``Bundle`` message in its proto3 JSON form (camelCase field
names, bytes as base64), with fields in proto field-number order, as cosign writes it::

    {"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial":{"publicKey":{"hint":"<b64 sha256 of the DER public key>"}},
     "dsseEnvelope":{"payload":"<b64>","payloadType":"…","signatures":[{"sig":"<b64>"}]}}

The hint only names the key; what is trusted is the key the verifier is given.  Sigstore's
verifiers require exactly one DSSE signature in a bundle, so we write and accept exactly one.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from pkgtool.jsonio import load_object
from pkgtool.sign import SignatureError
from pkgtool.sign.dsse import Envelope, verify
from pkgtool.sign.keys import PublicKey, public_key_hint
from pkgtool.sign.payloads import (
    INTOTO_PAYLOAD_TYPE,
    MAX_PAYLOAD_BYTES,
    Statement,
    check_statement_subject,
    parse_statement,
)

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# The same version, spelled the way bundle v0.1/v0.2 spelled media types.
_BUNDLE_MEDIA_TYPES = frozenset(
    {BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"}
)


@dataclass(frozen=True)
class Bundle:
    media_type: str
    key_hint: str
    envelope: Envelope


def make_bundle(envelope: Envelope, public_key: PublicKey) -> bytes:
    """Bundle JSON for a one-signature envelope made with ``public_key``'s private half."""
    if len(envelope.signatures) != 1:
        raise ValueError("a Sigstore bundle holds exactly one DSSE signature")
    signature = envelope.signatures[0]
    sig_json: dict[str, Any] = {"sig": _b64(signature.sig)}
    if signature.keyid:
        sig_json["keyid"] = signature.keyid
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": public_key_hint(public_key)}},
        "dsseEnvelope": {
            "payload": _b64(envelope.payload),
            "payloadType": envelope.payload_type,
            "signatures": [sig_json],
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def parse_bundle(data: bytes) -> Bundle:
    """Parse a key-based v0.3 bundle with a DSSE envelope; anything else is refused."""
    if len(data) > MAX_PAYLOAD_BYTES * 2:
        raise SignatureError("Sigstore bundle is too large")
    document = load_object(data, what="Sigstore bundle", error=SignatureError)
    media_type = document.get("mediaType")
    if media_type not in _BUNDLE_MEDIA_TYPES:
        raise SignatureError(f"unsupported Sigstore bundle media type {media_type!r}")
    material = document.get("verificationMaterial")
    if not isinstance(material, dict):
        raise SignatureError("Sigstore bundle lacks verificationMaterial")
    public_key = material.get("publicKey")
    if not isinstance(public_key, dict):
        if "certificate" in material or "x509CertificateChain" in material:
            raise SignatureError(
                "Sigstore bundle is keyless (certificate); verify it with an identity and issuer"
            )
        raise SignatureError("Sigstore bundle lacks verificationMaterial.publicKey")
    hint = public_key.get("hint", "")
    if not isinstance(hint, str):
        raise SignatureError("Sigstore bundle publicKey.hint is not a string")
    if "dsseEnvelope" not in document:
        raise SignatureError("Sigstore bundle carries no DSSE envelope")
    envelope = Envelope.from_dict(document["dsseEnvelope"])
    if len(envelope.signatures) != 1:
        raise SignatureError(
            f"Sigstore bundle must hold exactly one DSSE signature, found {len(envelope.signatures)}"
        )
    return Bundle(media_type, hint, envelope)


def verify_bundle(data: bytes, public_key: PublicKey) -> Bundle:
    """Parse ``data`` and check its signature with ``public_key``; raise with the reason."""
    bundle = parse_bundle(data)
    try:
        verify(bundle.envelope, public_key)
    except SignatureError as exc:
        ours = public_key_hint(public_key)
        if bundle.key_hint and bundle.key_hint != ours:
            raise SignatureError(
                f"bundle was signed by key {bundle.key_hint}, not by the given key {ours}"
            ) from exc
        raise
    return bundle


def verify_bundle_statement(data: bytes, public_key: PublicKey, *, digest: str) -> Statement:
    """Verify a bundle holding an in-toto statement about ``digest``; return the statement."""
    bundle = verify_bundle(data, public_key)
    if bundle.envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        raise SignatureError(
            f"bundle payload type is {bundle.envelope.payload_type!r}, expected {INTOTO_PAYLOAD_TYPE!r}"
        )
    statement = parse_statement(bundle.envelope.payload)
    check_statement_subject(statement, digest)
    return statement


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
