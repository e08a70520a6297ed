"""Keyless signing through sigstore-python, with fakes only at the network boundary.

A local HTTP server plays GitHub's OIDC token endpoint, Fulcio and Rekor.  Everything
between (ambient credential detection, sigstore's signer, its Fulcio and Rekor clients,
bundle assembly) is the real code.  Two things a fake Fulcio cannot provide are replaced:
the certificate transparency check (``verify_sct``: it needs a CT log in the trust root)
and, for verification, sigstore's ``Verifier`` (its trust root comes from Sigstore's TUF
repository).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pkgtool.errors import PkgtoolError
from pkgtool.sign import SignatureError
from pkgtool.sign.dsse import Envelope
from pkgtool.sign.keyless import (
    BUNDLE_ANNOTATION,
    CERTIFICATE_ANNOTATION,
    NO_IDENTITY,
    REKOR_BUNDLE_ANNOTATION,
    KeylessVerifier,
    bundle_identity,
    keyless_signer,
)
from pkgtool.sign.payloads import Subject, intoto_statement, simple_signing_payload

WORKFLOW = "pkgtool/pkgtool/.github/workflows/publish.yml@refs/heads/main"
IDENTITY = f"https://github.com/{WORKFLOW}"
ISSUER = "https://token.actions.githubusercontent.com"
DIGEST = "sha256:" + "d1" * 32
REQUEST_TOKEN = "actions-request-token-NEVER-PRINT"


class FakeSigstore(http.server.ThreadingHTTPServer):
    """OIDC token endpoint, Fulcio and Rekor on one loopback port."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ca_key = ec.generate_private_key(ec.SECP384R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-fulcio")])
        now = datetime.datetime.now(datetime.UTC)
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.ca_key.public_key()).serial_number(1)
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .sign(self.ca_key, hashes.SHA256()))
        self.token = jwt.encode({
            "iss": ISSUER, "aud": "sigstore", "sub": "repo:pkgtool/pkgtool:ref:refs/heads/main",
            "job_workflow_ref": WORKFLOW, "iat": int(time.time()), "exp": int(time.time()) + 600,
        }, "not-a-real-signing-secret-0123456789", algorithm="HS256")
        self.requests: list[tuple[str, str]] = []
        self.log_index = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def issue(self, csr_pem: bytes) -> list[str]:
        csr = x509.load_pem_x509_csr(csr_pem)
        now = datetime.datetime.now(datetime.UTC)
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca.subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(seconds=5))
                .not_valid_after(now + datetime.timedelta(minutes=10))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(IDENTITY)]), critical=True)
                .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"),
                                                          ISSUER.encode()), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in (leaf, self.ca)]

    def log_entry(self, proposed: bytes) -> dict[str, Any]:
        self.log_index += 1
        body = base64.b64encode(proposed).decode()
        root = hashlib.sha256(proposed).hexdigest()
        return {hashlib.sha256(proposed).hexdigest(): {
            "body": body, "integratedTime": 1700000000 + self.log_index, "logID": "c0" * 32,
            "logIndex": self.log_index,
            "verification": {
                "inclusionProof": {"checkpoint": "fake checkpoint\n", "hashes": [], "logIndex": self.log_index,
                                   "rootHash": root, "treeSize": self.log_index + 1},
                "signedEntryTimestamp": base64.b64encode(b"fake SET").decode(),
            },
        }}


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeSigstore

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, document: Any) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        if self.path.startswith("/oidc/token") and self.headers.get("Authorization") == f"bearer {REQUEST_TOKEN}":
            self._reply(200, {"value": self.server.token})
        else:
            self._reply(404, {"message": "no"})

    def do_POST(self) -> None:
        self.server.requests.append(("POST", self.path))
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/api/v2/signingCert":
            if self.headers.get("Authorization") != f"Bearer {self.server.token}":
                self._reply(401, {"message": "bad token"})
                return
            csr = base64.b64decode(json.loads(body)["certificateSigningRequest"])
            self._reply(200, {"signedCertificateEmbeddedSct": {"chain": {"certificates": self.server.issue(csr)}}})
        elif self.path == "/api/v1/log/entries":
            self._reply(201, self.server.log_entry(body))
        else:
            self._reply(404, {"message": "no"})


@pytest.fixture
def fake() -> Iterator[FakeSigstore]:
    server = FakeSigstore()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def github_env(fake: FakeSigstore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", f"{fake.url}/oidc/token?api-version=2.0")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
    # The CT log check needs a real CT log in the trust root; a fake Fulcio has none.
    monkeypatch.setattr("sigstore.sign.verify_sct", lambda *_args: None)


def _context(fake: FakeSigstore) -> Any:
    from sigstore._internal.fulcio.client import FulcioClient
    from sigstore._internal.rekor.client import RekorClient
    from sigstore.sign import SigningContext

    class NoCTLog:
        """Only asked for the CT keyring, which the patched verify_sct ignores."""

        def ct_keyring(self, _purpose: Any) -> None:
            return None

    def make() -> Any:
        return SigningContext(fulcio=FulcioClient(fake.url), rekor=RekorClient(fake.url),
                              trusted_root=NoCTLog())  # type: ignore[arg-type]

    return make


def _statement() -> bytes:
    return intoto_statement(subjects=[Subject("127.0.0.1:5000/pkgtool/x", DIGEST)],
                            predicate_type="https://slsa.dev/provenance/v1", predicate={"a": 1})


@pytest.mark.usefixtures("github_env")
def test_ambient_identity_signs_statements_into_bundles(fake: FakeSigstore) -> None:
    signer = keyless_signer(context=_context(fake))
    assert signer.identity == IDENTITY and signer.issuer == ISSUER
    assert signer.description == f"keyless {IDENTITY} ({ISSUER})"
    signed = signer.sign_statement(_statement())
    bundle = json.loads(signed.bundle)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert signed.envelope.payload == _statement()
    assert bundle_identity(signed.bundle) == IDENTITY
    assert signer.owns_bundle(signed.bundle)
    assert signer.owns_envelope(signed.envelope, signed.annotations)
    rekor = json.loads(signed.annotations[REKOR_BUNDLE_ANNOTATION])
    assert list(rekor) == ["SignedEntryTimestamp", "Payload"]
    assert rekor["Payload"]["logID"] == "c0" * 32 and rekor["Payload"]["logIndex"] == 1
    assert signed.annotations[CERTIFICATE_ANNOTATION].startswith("-----BEGIN CERTIFICATE-----")
    assert json.loads(signed.annotations[BUNDLE_ANNOTATION]) == bundle
    # One Fulcio certificate for the run, one Rekor entry per signature.
    signer.sign_statement(_statement())
    posts = [path for method, path in fake.requests if method == "POST"]
    assert posts.count("/api/v2/signingCert") == 1 and posts.count("/api/v1/log/entries") == 2


@pytest.mark.usefixtures("github_env")
def test_keyless_simple_signing_signature(fake: FakeSigstore) -> None:
    signer = keyless_signer(context=_context(fake))
    payload = simple_signing_payload(docker_reference="127.0.0.1:5000/pkgtool/x", manifest_digest=DIGEST)
    signed = signer.sign_simple_signing(payload)
    certificate = x509.load_pem_x509_certificate(signed.annotations[CERTIFICATE_ANNOTATION].encode())
    public = certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signed.signature, payload, ec.ECDSA(hashes.SHA256()))
    assert signer.owns_signature(payload, signed.signature, signed.annotations)
    assert signer.sign_link(b"{}") is None  # in-toto links need a functionary key


def test_no_key_and_no_token_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                 "GITLAB_CI", "BUILDKITE", "CIRCLECI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("id._internal.oidc.ambient.detect_gcp", lambda _audience: None)
    with pytest.raises(PkgtoolError) as caught:
        keyless_signer()
    assert str(caught.value) == NO_IDENTITY
    assert "id-token: write" in NO_IDENTITY and "\n" not in NO_IDENTITY


def test_github_without_id_token_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", raising=False)
    with pytest.raises(PkgtoolError, match=r"ambient credential detection failed: .*insufficient OIDC token permissions"):
        keyless_signer()


@pytest.mark.usefixtures("github_env")
def test_the_token_is_never_in_what_is_produced(fake: FakeSigstore) -> None:
    signer = keyless_signer(context=_context(fake))
    signed = signer.sign_statement(_statement())
    produced = signed.bundle + json.dumps(dict(signed.annotations)).encode() + repr(signer).encode()
    assert fake.token.encode() not in produced
    assert REQUEST_TOKEN.encode() not in produced
    assert fake.token not in signer.description


@pytest.mark.usefixtures("github_env")
def test_fulcio_refusal_is_one_line(fake: FakeSigstore, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = keyless_signer(context=_context(fake))
    fake.token = "different"  # the fake Fulcio now refuses the ambient token
    with pytest.raises(PkgtoolError, match=f"keyless signing as {IDENTITY} failed"):
        signer.sign_statement(_statement())


class FakeVerifier:
    """sigstore's Verifier stands for the TUF-distributed trust root: fake that boundary."""

    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.policies: list[Any] = []

    def verify_dsse(self, bundle: Any, policy: Any) -> tuple[str, bytes]:
        self.policies.append(policy)
        if not self.accept:
            from sigstore.errors import VerificationError

            raise VerificationError("certificate identity mismatch")
        envelope = bundle._dsse_envelope
        return envelope._inner.payload_type, envelope._inner.payload

    def verify_artifact(self, payload: bytes, bundle: Any, policy: Any) -> None:
        self.policies.append(policy)
        if not self.accept:
            from sigstore.errors import VerificationError

            raise VerificationError("signature mismatch")


@pytest.mark.usefixtures("github_env")
def test_keyless_verifier_checks_bundles_and_layers(fake: FakeSigstore) -> None:
    signer = keyless_signer(context=_context(fake))
    signed = signer.sign_statement(_statement())
    fake_verifier = FakeVerifier(accept=True)
    verifier = KeylessVerifier(IDENTITY, ISSUER, verifier=lambda: fake_verifier)  # type: ignore[arg-type,return-value]
    envelope = verifier.verify_bundle(signed.bundle)
    assert (envelope.payload_type, envelope.payload) == ("application/vnd.in-toto+json", _statement())
    assert verifier.verify_attestation_layer(signed.envelope, signed.annotations).payload == _statement()
    # The policy handed to sigstore accepts exactly the signing certificate's identity.
    leaf = x509.load_pem_x509_certificate(signed.annotations[CERTIFICATE_ANNOTATION].encode())
    fake_verifier.policies[0].verify(leaf)
    with pytest.raises(Exception, match="SANs do not match"):
        KeylessVerifier("https://github.com/evil/x/.github/workflows/p.yml@refs/heads/main", ISSUER)._policy().verify(leaf)

    payload = simple_signing_payload(docker_reference="127.0.0.1:5000/pkgtool/x", manifest_digest=DIGEST)
    classic = signer.sign_simple_signing(payload)
    verifier.verify_signature_layer(payload, classic.signature, classic.annotations)
    with pytest.raises(SignatureError, match="differs from the bundle"):
        verifier.verify_signature_layer(payload, b"other", classic.annotations)
    forged = Envelope(signed.envelope.payload_type, b'{"forged":true}', signed.envelope.signatures)
    with pytest.raises(SignatureError, match="differs from the bundle"):
        verifier.verify_attestation_layer(forged, signed.annotations)
    with pytest.raises(SignatureError, match="carries no Sigstore bundle"):
        verifier.verify_attestation_layer(signed.envelope, {})

    refusing = KeylessVerifier("https://github.com/evil/x", ISSUER, verifier=lambda: FakeVerifier(accept=False))  # type: ignore[arg-type,return-value]
    with pytest.raises(SignatureError, match=r"does not verify for https://github.com/evil/x .*identity mismatch"):
        refusing.verify_bundle(signed.bundle)
    with pytest.raises(SignatureError, match="not a keyless Sigstore bundle"):
        refusing.verify_bundle(b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}')
