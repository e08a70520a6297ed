"""DSSE envelopes (https://github.com/secure-systems-lab/dsse), ECDSA P-256 / SHA-256.

The signature covers the pre-authentication encoding, never the raw payload::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where LEN is the byte length in ASCII decimal.  Binding the type into the signed bytes is
what stops a signed SBOM from being replayed as, say, a provenance statement.

Verification is deny-by-default: an envelope passes only if at least one of its signatures
verifies with the given key.  Key ids are hints (cosign leaves them empty), never trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pkgtool.jsonio import load_object
from pkgtool.sign import SignatureError
from pkgtool.sign.keys import PrivateKey, PublicKey, public_key_hint
from pkgtool.sign.payloads import MAX_PAYLOAD_BYTES

ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
# An envelope with more signatures than this is an attack on the verifier, not a use case.
MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_dict(self) -> dict[str, Any]:
        # Field order as go-securesystemslib's Envelope struct writes it.
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode(),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode()} for s in self.signatures
            ],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Envelope:
        if len(data) > MAX_PAYLOAD_BYTES * 2:
            raise SignatureError("DSSE envelope is too large")
        return cls.from_dict(load_object(data, what="DSSE envelope", error=SignatureError))

    @classmethod
    def from_dict(cls, document: Any) -> Envelope:
        """Parse the JSON form (base64 ``payload`` and ``sig``, as in DSSE and in bundles)."""
        if not isinstance(document, dict):
            raise SignatureError("DSSE envelope is not a JSON object")
        payload_type = document.get("payloadType")
        if not isinstance(payload_type, str) or not payload_type:
            raise SignatureError("DSSE envelope lacks payloadType")
        payload = _b64decode(document.get("payload"), what="DSSE payload")
        raw_signatures = document.get("signatures")
        if not isinstance(raw_signatures, list):
            raise SignatureError("DSSE envelope lacks a signatures list")
        if len(raw_signatures) > MAX_SIGNATURES:
            raise SignatureError(f"DSSE envelope has more than {MAX_SIGNATURES} signatures")
        signatures = []
        for entry in raw_signatures:
            if not isinstance(entry, dict):
                raise SignatureError("DSSE signature entry is not an object")
            keyid = entry.get("keyid", "")
            if not isinstance(keyid, str):
                raise SignatureError("DSSE signature keyid is not a string")
            signatures.append(Signature(_b64decode(entry.get("sig"), what="DSSE signature"), keyid))
        return cls(payload_type, payload, tuple(signatures))


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """ASN.1 DER ECDSA-P256-SHA256 signature, the form cosign writes and reads."""
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def sign(
    payload: bytes, *, payload_type: str, key: PrivateKey, keyid: str = ""
) -> Envelope:
    """An envelope holding one signature by ``key`` over ``PAE(payload_type, payload)``."""
    signature = sign_bytes(key, pae(payload_type, payload))
    return Envelope(payload_type, payload, (Signature(signature, keyid),))


def verify(
    envelope: Envelope, key: PublicKey, *, payload_type: str | None = None
) -> bytes:
    """Return the payload if a signature in ``envelope`` verifies with ``key``, else raise.

    ``payload_type``, when given, must match the envelope's type exactly.
    """
    if payload_type is not None and envelope.payload_type != payload_type:
        raise SignatureError(
            f"DSSE payload type is {envelope.payload_type!r}, expected {payload_type!r}"
        )
    if not envelope.signatures:
        raise SignatureError("DSSE envelope carries no signatures")
    signed = pae(envelope.payload_type, envelope.payload)
    for signature in envelope.signatures:
        if verify_bytes(key, signed, signature.sig):
            return envelope.payload
    raise SignatureError(
        f"no DSSE signature verifies with key {public_key_hint(key)} "
        f"({len(envelope.signatures)} signature(s) checked): signed by another key, or "
        "the payload was altered"
    )


def _b64decode(value: Any, *, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} is missing or not a string")
    # DSSE allows standard or URL-safe base64; protobuf JSON writers may drop the padding.
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise SignatureError(f"{what} is not valid base64") from exc
