"""Keyless signing and verification with sigstore-python (Fulcio, Rekor, ambient OIDC).

Signing needs an OIDC identity token.  In GitHub Actions with ``permissions: id-token:
write``, sigstore's ambient credential detection fetches one for the audience
``sigstore``; elsewhere there is none and pkgtool says so in one line (it never opens a
browser: signing runs unattended).  The token is exchanged at Fulcio for a short-lived
certificate binding an ephemeral key to the workflow identity, and every signature is
logged in Rekor; both come back in the Sigstore bundle.

What lands in the registry:

* referrers: the bundle as sigstore-python writes it (DSSE, certificate, Rekor entry);
* ``.att`` layers: the bundle's DSSE envelope, with cosign's ``dev.sigstore.cosign/certificate``
  and ``dev.sigstore.cosign/bundle`` (Rekor SET) annotations, plus the whole bundle under
  :data:`BUNDLE_ANNOTATION` so the layer can be verified on its own;
* ``.sig`` layers: the signature over the simple-signing payload (a ``hashedrekord``
  entry), with the same annotations.

Verification uses sigstore's ``Verifier.production()`` (its trust root comes from
Sigstore's TUF repository) and an ``Identity(identity, issuer)`` policy.

The network boundary (trust root, Fulcio, Rekor, the OIDC token endpoint) is behind
:func:`production_context` and sigstore's own clients, so tests can point those at fakes.
The token itself is a secret: it is never printed, logged or written anywhere.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pkgtool.errors import PkgtoolError
from pkgtool.sign import SignatureError
from pkgtool.sign.dsse import Envelope
from pkgtool.sign.signer import SignedPayload, SignedStatement

if TYPE_CHECKING:
    from sigstore.models import Bundle
    from sigstore.oidc import IdentityToken
    from sigstore.sign import Signer as SigstoreSigner
    from sigstore.sign import SigningContext
    from sigstore.verify import Verifier

CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
# Not a cosign annotation: the complete Sigstore bundle of a .sig/.att layer, so that
# pkgtool (and anyone with a Sigstore verifier) can check the layer without cosign's
# legacy certificate-plus-SET verification.
BUNDLE_ANNOTATION = "dev.pkgtool.sigstore/bundle"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

NO_IDENTITY = (
    "no signing key given (--key K) and no ambient OIDC identity token for keyless "
    "signing (in GitHub Actions, grant `permissions: id-token: write`)"
)


def production_context() -> SigningContext:
    """Sigstore's public-good instance; fetches the trust root over the network (TUF)."""
    from sigstore.models import ClientTrustConfig
    from sigstore.sign import SigningContext

    try:
        return SigningContext.from_trust_config(ClientTrustConfig.production())
    except Exception as exc:  # sigstore raises a zoo of network and TUF errors
        raise PkgtoolError(f"keyless signing: cannot load Sigstore's trust root ({type(exc).__name__})") from None


def ambient_token() -> IdentityToken | None:
    """The ambient OIDC identity token (GitHub Actions and the like), or None."""
    from sigstore.oidc import IdentityError, IdentityToken, detect_credential

    try:
        raw = detect_credential()
    except IdentityError as exc:
        # The message names the CI provider's failure, not the token.
        raise PkgtoolError(f"keyless signing: ambient credential detection failed: {_first_line(exc)}") from None
    if not raw:
        return None
    try:
        return IdentityToken(raw)
    except IdentityError as exc:
        raise PkgtoolError(f"keyless signing: the ambient identity token is unusable: {_first_line(exc)}") from None


def keyless_signer(
    *,
    token: IdentityToken | None = None,
    context: Callable[[], SigningContext] = production_context,
) -> KeylessSigner:
    """A keyless signer for the ambient identity; raises the one-line "neither key nor
    token" error when there is no identity."""
    found = token if token is not None else ambient_token()
    if found is None:
        raise PkgtoolError(NO_IDENTITY)
    return KeylessSigner(found, context)


class KeylessSigner:
    """Signs with a Fulcio certificate for an OIDC identity; each signature is in Rekor."""

    def __init__(self, token: IdentityToken, context: Callable[[], SigningContext]) -> None:
        self._token = token
        self._context_factory = context
        self._signer: SigstoreSigner | None = None
        self.identity = certificate_identity_for(token)
        self.issuer = token.issuer

    def __repr__(self) -> str:
        return f"KeylessSigner({self.identity!r})"

    @property
    def description(self) -> str:
        return f"keyless {self.identity} ({self.issuer})"

    def _sigstore(self) -> SigstoreSigner:
        if self._signer is None:
            # One certificate for the whole run (it lives ~10 minutes): one Fulcio call.
            # (sigstore's context manager only hands the signer out; it holds no resource.)
            with self._context_factory().signer(self._token, cache=True) as signer:
                self._signer = signer
        return self._signer

    def sign_simple_signing(self, payload: bytes) -> SignedPayload:
        bundle = self._call(lambda s: s.sign_artifact(payload))
        return SignedPayload(bundle.signature, layer_annotations(bundle))

    def sign_statement(self, statement: bytes) -> SignedStatement:
        from sigstore.dsse import Statement

        try:
            parsed = Statement(statement)
        except Exception as exc:
            raise PkgtoolError(f"keyless signing: sigstore refuses the statement: {_first_line(exc)}") from None
        bundle = self._call(lambda s: s.sign_dsse(parsed))
        data = bundle.to_json().encode()
        envelope = Envelope.from_dict(json.loads(data)["dsseEnvelope"])
        return SignedStatement(envelope, data, layer_annotations(bundle))

    def sign_link(self, link: bytes) -> SignedStatement | None:
        # in-toto links are key-based (functionary key ids in the root layout).
        return None

    def _call(self, operation: Callable[[SigstoreSigner], Bundle]) -> Bundle:
        try:
            return operation(self._sigstore())
        except PkgtoolError:
            raise
        except Exception as exc:
            raise PkgtoolError(f"keyless signing as {self.identity} failed: {_first_line(exc)}") from None

    def owns_signature(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> bool:
        return certificate_identity(annotations.get(CERTIFICATE_ANNOTATION, "").encode()) == self.identity

    def owns_envelope(self, envelope: Envelope, annotations: Mapping[str, str]) -> bool:
        # The envelope alone names no signer; the layer's bundle annotation does.
        bundle = annotations.get(BUNDLE_ANNOTATION, "").encode()
        return bool(bundle) and self.owns_bundle(bundle)

    def owns_bundle(self, bundle: bytes) -> bool:
        return bundle_identity(bundle) == self.identity


def certificate_identity_for(token: IdentityToken) -> str:
    """The identity Fulcio will write into the certificate for ``token``.

    For GitHub Actions that is the workflow file at its ref (the ``job_workflow_ref``
    claim as a URL), not the token's ``sub``; other issuers certify the token identity.
    """
    if token.issuer == GITHUB_ISSUER:
        import jwt

        # Claims only: the token's signature is Fulcio's to check, not ours.
        claims = jwt.decode(str(token), options={"verify_signature": False})
        ref = claims.get("job_workflow_ref")
        if isinstance(ref, str) and ref:
            return f"https://github.com/{ref}"
    return token.identity


def layer_annotations(bundle: Bundle) -> dict[str, str]:
    """cosign's keyless layer annotations for a Sigstore bundle, plus the bundle itself."""
    from cryptography.hazmat.primitives.serialization import Encoding

    document = json.loads(bundle.to_json())
    annotations = {
        CERTIFICATE_ANNOTATION: bundle.signing_certificate.public_bytes(Encoding.PEM).decode(),
        BUNDLE_ANNOTATION: json.dumps(document, separators=(",", ":")),
    }
    rekor = rekor_set_bundle(document)
    if rekor is not None:
        annotations[REKOR_BUNDLE_ANNOTATION] = rekor
    return annotations


def rekor_set_bundle(bundle: Mapping[str, Any]) -> str | None:
    """cosign's ``dev.sigstore.cosign/bundle`` JSON (Rekor's signed entry timestamp) from a
    Sigstore bundle's first tlog entry, or None without an inclusion promise."""
    try:
        entry = bundle["verificationMaterial"]["tlogEntries"][0]
        promise = entry["inclusionPromise"]["signedEntryTimestamp"]
        document = {
            "SignedEntryTimestamp": promise,
            "Payload": {
                "body": entry["canonicalizedBody"],
                "integratedTime": int(entry["integratedTime"]),
                "logIndex": int(entry["logIndex"]),
                "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
            },
        }
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error):
        return None
    return json.dumps(document, separators=(",", ":"))


def certificate_identity(pem_or_der: bytes) -> str | None:
    """The first URI or e-mail subject alternative name of a certificate, or None."""
    from cryptography import x509

    try:
        if pem_or_der.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(pem_or_der)
        else:
            cert = x509.load_der_x509_certificate(pem_or_der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    for kind in (x509.UniformResourceIdentifier, x509.RFC822Name):
        values = names.get_values_for_type(kind)
        if values:
            return str(values[0])
    return None


def bundle_identity(bundle: bytes) -> str | None:
    try:
        raw = json.loads(bundle)["verificationMaterial"]["certificate"]["rawBytes"]
        return certificate_identity(base64.b64decode(raw))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


# --------------------------------------------------------------------------- verification


def production_verifier() -> Verifier:
    from sigstore.verify import Verifier

    try:
        return Verifier.production()
    except Exception as exc:
        raise PkgtoolError(f"keyless verification: cannot load Sigstore's trust root ({type(exc).__name__})") from None


class KeylessVerifier:
    """Checks Sigstore bundles against an ``identity`` and its OIDC ``issuer``."""

    def __init__(self, identity: str, issuer: str, *, verifier: Callable[[], Verifier] = production_verifier) -> None:
        self.identity, self.issuer = identity, issuer
        self._factory = verifier
        self._verifier: Verifier | None = None

    @property
    def description(self) -> str:
        return f"keyless {self.identity} ({self.issuer})"

    def _get(self) -> Verifier:
        if self._verifier is None:
            self._verifier = self._factory()
        return self._verifier

    def _policy(self) -> Any:
        from sigstore.verify.policy import Identity

        return Identity(identity=self.identity, issuer=self.issuer)

    def _bundle(self, data: bytes) -> Bundle:
        from sigstore.models import Bundle

        try:
            return Bundle.from_json(data)
        except Exception as exc:
            raise SignatureError(f"not a keyless Sigstore bundle: {_first_line(exc)}") from None

    def verify_bundle(self, data: bytes) -> Envelope:
        """The verified DSSE envelope of a keyless bundle (signatures not kept)."""
        bundle = self._bundle(data)
        try:
            payload_type, payload = self._get().verify_dsse(bundle, self._policy())
        except PkgtoolError:
            raise
        except Exception as exc:
            raise SignatureError(
                f"keyless bundle does not verify for {self.identity} ({self.issuer}): {_first_line(exc)}"
            ) from None
        return Envelope(payload_type, payload, ())

    def verify_attestation_layer(self, envelope: Envelope, annotations: Mapping[str, str]) -> Envelope:
        data = annotations.get(BUNDLE_ANNOTATION)
        if not data:
            raise SignatureError("keyless .att layer carries no Sigstore bundle to verify")
        verified = self.verify_bundle(data.encode())
        if (verified.payload_type, verified.payload) != (envelope.payload_type, envelope.payload):
            raise SignatureError(".att layer envelope differs from the bundle that signs it")
        return verified

    def verify_signature_layer(self, payload: bytes, signature: bytes, annotations: Mapping[str, str]) -> None:
        data = annotations.get(BUNDLE_ANNOTATION)
        if not data:
            raise SignatureError("keyless .sig layer carries no Sigstore bundle to verify")
        bundle = self._bundle(data.encode())
        if bundle.signature != signature:
            raise SignatureError(".sig layer signature differs from the bundle that carries it")
        try:
            self._get().verify_artifact(payload, bundle, self._policy())
        except PkgtoolError:
            raise
        except Exception as exc:
            raise SignatureError(
                f"keyless signature does not verify for {self.identity} ({self.issuer}): {_first_line(exc)}"
            ) from None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
