"""Who is trusted: the verifying side of :mod:`pkgtool.sign.signer`.

A verifier checks the three shapes pkgtool (and cosign) attach: Sigstore bundles
(referrers), DSSE envelopes in ``.att`` layers, and simple-signing signatures in ``.sig``
layers.  :class:`KeyVerifier` trusts a set of public keys; the keyless one
(:class:`pkgtool.sign.keyless.KeylessVerifier`) trusts an OIDC identity and issuer.  Both
raise :class:`SignatureError` with the reason, and never fall back to trusting anything
the attached material says about itself (a bundle's key hint only names a key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

from pkgtool.errors import PkgtoolError
from pkgtool.sign import SignatureError
from pkgtool.sign.bundle import verify_bundle
from pkgtool.sign.dsse import Envelope, verify, verify_bytes
from pkgtool.sign.keys import PublicKey, public_key_hint

T = TypeVar("T")


class Verifier(Protocol):
    @property
    def description(self) -> str: ...

    def verify_bundle(self, data: bytes) -> Envelope:
        """The envelope of a bundle whose signature verifies; raise otherwise."""
        ...

    def verify_attestation_layer(self, envelope: Envelope, annotations: Mapping[str, str]) -> Envelope: ...

    def verify_signature_layer(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> None: ...


class KeyVerifier:
    """Trusts signatures by any of ``keys`` (ECDSA P-256 public keys)."""

    def __init__(self, keys: Sequence[PublicKey]) -> None:
        if not keys:
            raise ValueError("a key verifier needs at least one key")
        self.keys = tuple(keys)
        self.hints = tuple(public_key_hint(k) for k in self.keys)

    @property
    def description(self) -> str:
        return ("key " if len(self.hints) == 1 else "keys ") + ", ".join(self.hints)

    def verify_bundle(self, data: bytes) -> Envelope:
        errors = []
        for key in self.keys:
            try:
                return verify_bundle(data, key).envelope
            except SignatureError as exc:
                errors.append(str(exc))
        raise SignatureError(errors[0] if len(errors) == 1 else "; ".join(errors))

    def verify_attestation_layer(self, envelope: Envelope, annotations: Mapping[str, str]) -> Envelope:
        errors = []
        for key in self.keys:
            try:
                verify(envelope, key)
                return envelope
            except SignatureError as exc:
                errors.append(str(exc))
        raise SignatureError(errors[0] if len(errors) == 1 else "; ".join(errors))

    def verify_signature_layer(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> None:
        if not any(verify_bytes(key, payload, signature) for key in self.keys):
            raise SignatureError(f"cosign signature does not verify with {self.description}")


class AnyVerifier:
    """Trusts what any of ``verifiers`` trusts (a policy's keys and keyless identities).

    A later verifier that cannot run at all (no network for a keyless trust root) counts
    as a rejection, so an offline check with a key still works.
    """

    def __init__(self, verifiers: Sequence[Verifier]) -> None:
        self.verifiers = tuple(verifiers)

    @property
    def description(self) -> str:
        return " or ".join(v.description for v in self.verifiers)

    def _first(self, check: Callable[[Verifier], T]) -> T:
        errors = []
        for verifier in self.verifiers:
            try:
                return check(verifier)
            except PkgtoolError as exc:
                errors.append(str(exc))
        raise SignatureError("; ".join(errors))

    def verify_bundle(self, data: bytes) -> Envelope:
        return self._first(lambda v: v.verify_bundle(data))

    def verify_attestation_layer(self, envelope: Envelope, annotations: Mapping[str, str]) -> Envelope:
        return self._first(lambda v: v.verify_attestation_layer(envelope, annotations))

    def verify_signature_layer(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> None:
        self._first(lambda v: v.verify_signature_layer(payload, signature, annotations))


def trusted_key_hints(verifier: Verifier) -> frozenset[str]:
    """Hints of the keys ``verifier`` trusts (none for keyless identities)."""
    if isinstance(verifier, KeyVerifier):
        return frozenset(verifier.hints)
    if isinstance(verifier, AnyVerifier):
        return frozenset().union(*(trusted_key_hints(v) for v in verifier.verifiers))
    return frozenset()


def is_key_based(verifier: Verifier) -> bool:
    """True when every trusted signer is a key (so in-toto links can be demanded)."""
    if isinstance(verifier, AnyVerifier):
        return all(is_key_based(v) for v in verifier.verifiers)
    return isinstance(verifier, KeyVerifier)
