"""Who signs: one interface over key-based (offline) and keyless (Sigstore) signing.

Everything pkgtool attaches to an image is signed through a :class:`Signer`:

* the cosign simple-signing payload for ``sha256-<hex>.sig``
  (:meth:`Signer.sign_simple_signing`),
* in-toto statements (the "this image is signed" statement, SLSA provenance, SBOMs), each
  both as a DSSE envelope for ``sha256-<hex>.att`` and as a Sigstore bundle for the
  referrer (:meth:`Signer.sign_statement`),
* the in-toto link of the build step (:meth:`Signer.sign_link`), which only a key signer
  can make: in-toto's verifier matches functionaries by key id, and a Fulcio certificate
  lives for minutes.

The ``owns_*`` methods let attaching stay idempotent: ECDSA signatures are randomised, so
"signed already" means "there is a signature over these exact bytes that this signer
made", never "the bytes are equal".  They are a dedupe test, not a trust decision.

:class:`KeySigner` lives here; the keyless signer is in :mod:`pkgtool.sign.keyless`
because it imports sigstore, which is slow to import and needs the network.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from pkgtool.sign import SignatureError
from pkgtool.sign.bundle import make_bundle, parse_bundle
from pkgtool.sign.dsse import Envelope, sign, sign_bytes, verify, verify_bytes
from pkgtool.sign.keys import PrivateKey, PublicKey, public_key_hint
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE


@dataclass(frozen=True)
class SignedPayload:
    """A signature over a simple-signing payload, with any extra layer annotations."""

    signature: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SignedStatement:
    """One signed in-toto payload in the two shapes pkgtool attaches.

    ``envelope`` goes into the cosign ``.att`` layer (with ``annotations`` on that layer),
    ``bundle`` (Sigstore bundle v0.3 JSON) into the OCI referrer.
    """

    envelope: Envelope
    bundle: bytes
    annotations: Mapping[str, str] = field(default_factory=dict)


class Signer(Protocol):
    """What signing an image needs from a key or an identity."""

    @property
    def description(self) -> str:
        """Who signs, for reports: ``key <hint>`` or ``keyless <identity> (<issuer>)``."""
        ...

    def sign_simple_signing(self, payload: bytes) -> SignedPayload: ...

    def sign_statement(self, statement: bytes) -> SignedStatement: ...

    def sign_link(self, link: bytes) -> SignedStatement | None:
        """The in-toto link signed for ``in_toto_verify``, or None if this signer cannot."""
        ...

    def owns_signature(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> bool: ...

    def owns_envelope(self, envelope: Envelope, annotations: Mapping[str, str]) -> bool: ...

    def owns_bundle(self, bundle: bytes) -> bool: ...


class KeySigner:
    """Signs with an ECDSA P-256 private key (a cosign key file), fully offline."""

    def __init__(self, key: PrivateKey) -> None:
        self._key = key
        self.public_key: PublicKey = key.public_key()
        self.hint = public_key_hint(self.public_key)

    def __repr__(self) -> str:
        # Never the key material: reprs end up in logs and tracebacks.
        return f"KeySigner({self.hint})"

    @property
    def description(self) -> str:
        return f"key {self.hint}"

    def sign_simple_signing(self, payload: bytes) -> SignedPayload:
        return SignedPayload(sign_bytes(self._key, payload))

    def sign_statement(self, statement: bytes) -> SignedStatement:
        # cosign leaves DSSE key ids empty; verifiers are given the key, never look it up.
        envelope = sign(statement, payload_type=INTOTO_PAYLOAD_TYPE, key=self._key)
        return SignedStatement(envelope, make_bundle(envelope, self.public_key))

    def sign_link(self, link: bytes) -> SignedStatement:
        from pkgtool.sign.intoto import securesystemslib_keyid

        # in-toto (securesystemslib) only considers signatures whose keyid is the
        # functionary's, so this envelope must carry it.
        envelope = sign(
            link, payload_type=INTOTO_PAYLOAD_TYPE, key=self._key,
            keyid=securesystemslib_keyid(self.public_key),
        )
        return SignedStatement(envelope, make_bundle(envelope, self.public_key))

    def owns_signature(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> bool:
        return verify_bytes(self.public_key, payload, signature)

    def owns_envelope(self, envelope: Envelope, annotations: Mapping[str, str] | None = None) -> bool:
        try:
            verify(envelope, self.public_key)
        except SignatureError:
            return False
        return True

    def owns_bundle(self, bundle: bytes) -> bool:
        try:
            parsed = parse_bundle(bundle)
        except SignatureError:
            return False
        return self.owns_envelope(parsed.envelope, {})


def bundle_payload(bundle: bytes) -> bytes | None:
    """The DSSE payload of any bundle (key-based or keyless), unverified; None if unreadable.

    Used to find bundles about the same statement before signing it again.
    """
    try:
        document = json.loads(bundle)
        encoded = document["dsseEnvelope"]["payload"]
        return base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
