"""in-toto link Statements signed by pkgtool pass in-toto's layout checks; bad ones fail.

Each test makes its own keys and layouts in memory or tmp dirs; none uses signing/'s.
"""

from __future__ import annotations

import datetime
import json

import pytest

from pkgtool.sign import SignatureError, keys
from pkgtool.sign.dsse import Envelope
from pkgtool.sign.intoto import (
    INDEX_PRODUCT,
    LINK_PREDICATE_TYPE,
    make_layout,
    make_link,
    parse_link,
    securesystemslib_keyid,
    verify_link,
)
from pkgtool.sign.signer import KeySigner

INDEX = "sha256:" + "1d" * 32
AMD64 = "sha256:" + "a6" * 32
MATERIALS = {"pkg/test/Dockerfile": "cd" * 32, "pkg/test/build.yml": "sha256:" + "ab" * 32}
LATER = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)


def _link(signer: KeySigner, *, index: str = INDEX, materials: dict[str, str] | None = None) -> Envelope:
    payload = make_link(materials=materials or MATERIALS,
                        products={INDEX_PRODUCT: index, "oci/linux/amd64": AMD64})
    return signer.sign_link(payload).envelope


@pytest.fixture
def parties() -> tuple[keys.PrivateKey, KeySigner]:
    return keys.generate_keypair(), KeySigner(keys.generate_keypair())


def _layout(owner: keys.PrivateKey, functionary: KeySigner, *, expires: datetime.datetime = LATER) -> bytes:
    return make_layout(layout_key=owner, functionaries=[functionary.public_key], expires=expires)


def test_link_verifies_against_the_layout(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    link = _link(functionary)
    assert link.signatures[0].keyid == securesystemslib_keyid(functionary.public_key)
    result = verify_link(_layout(owner, functionary), [owner.public_key()], link, index_digest=INDEX)
    assert result.link.products[INDEX_PRODUCT] == INDEX[7:]
    assert result.link.materials["pkg/test/build.yml"] == "ab" * 32
    assert result.functionary_keyid == link.signatures[0].keyid


def test_link_is_a_statement_with_the_link_predicate(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    """What cosign and policy engines read: an in-toto Statement v1 whose subjects are the
    products, with the attestation framework's link predicate (v0.3)."""
    _owner, functionary = parties
    statement = json.loads(_link(functionary).payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == LINK_PREDICATE_TYPE == "https://in-toto.io/attestation/link/v0.3"
    assert statement["subject"] == [{"name": INDEX_PRODUCT, "digest": {"sha256": INDEX[7:]}},
                                    {"name": "oci/linux/amd64", "digest": {"sha256": AMD64[7:]}}]
    predicate = statement["predicate"]
    assert predicate["name"] == "build" and predicate["command"] == []
    assert predicate["materials"] == [{"name": "pkg/test/Dockerfile", "digest": {"sha256": "cd" * 32}},
                                      {"name": "pkg/test/build.yml", "digest": {"sha256": "ab" * 32}}]
    info = parse_link(_link(functionary).payload)
    assert info.products == {INDEX_PRODUCT: INDEX[7:], "oci/linux/amd64": AMD64[7:]}


def test_a_classic_link_of_earlier_versions_still_verifies(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    from in_toto.models.link import Link  # type: ignore[import-untyped]
    from in_toto.models.metadata import Envelope as InTotoEnvelope  # type: ignore[import-untyped]

    owner, functionary = parties
    classic = Link(name="build", materials={p: {"sha256": v.removeprefix("sha256:")} for p, v in MATERIALS.items()},
                   products={INDEX_PRODUCT: {"sha256": INDEX[7:]}}, byproducts={}, command=[], environment={})
    envelope = functionary.sign_link(InTotoEnvelope.from_signable(classic).payload).envelope
    result = verify_link(_layout(owner, functionary), [owner.public_key()], envelope, index_digest=INDEX)
    assert result.link.materials["pkg/test/build.yml"] == "ab" * 32


def test_expired_layout_is_rejected(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    expired = _layout(owner, functionary, expires=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    with pytest.raises(SignatureError, match="layout expired on 2020-01-01"):
        verify_link(expired, [owner.public_key()], _link(functionary), index_digest=INDEX)


def test_layout_signed_by_another_key_is_rejected(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    with pytest.raises(SignatureError, match="layout signature does not verify"):
        verify_link(_layout(owner, functionary), [keys.generate_keypair().public_key()], _link(functionary),
                    index_digest=INDEX)


def test_link_by_an_unauthorised_functionary_is_rejected(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    intruder = KeySigner(keys.generate_keypair())
    with pytest.raises(SignatureError, match="which the layout does not authorise for step 'build'"):
        verify_link(_layout(owner, functionary), [owner.public_key()], _link(intruder), index_digest=INDEX)


def test_link_with_a_forged_keyid_fails_in_toto(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    intruder = KeySigner(keys.generate_keypair())
    forged = _link(intruder)
    # Claim the functionary's key id: in_toto_verify must still find no valid signature.
    signature = forged.signatures[0]
    forged = Envelope(forged.payload_type, forged.payload,
                      (type(signature)(signature.sig, securesystemslib_keyid(functionary.public_key)),))
    with pytest.raises(SignatureError, match="no 'build' link signed by an authorised functionary"):
        verify_link(_layout(owner, functionary), [owner.public_key()], forged, index_digest=INDEX)


def test_link_of_another_image_is_rejected(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    with pytest.raises(SignatureError, match=f"product oci/index is sha256:{'1d' * 32}, not sha256:{'99' * 32}"):
        verify_link(_layout(owner, functionary), [owner.public_key()], _link(functionary),
                    index_digest="sha256:" + "99" * 32)


def test_artifact_rules_are_enforced(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    link = _link(functionary, materials={**MATERIALS, "secrets/id_rsa": "ee" * 32})
    with pytest.raises(SignatureError, match="artifact rule failed"):
        verify_link(_layout(owner, functionary), [owner.public_key()], link, index_digest=INDEX)


def test_layouts_with_inspections_are_refused(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    from in_toto.models.layout import Inspection, Layout  # type: ignore[import-untyped]
    from in_toto.models.metadata import Envelope as InTotoEnvelope
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    owner, functionary = parties
    layout = Layout(inspect=[Inspection(name="pwn", run=["sh", "-c", "touch /tmp/pwned"])],
                    expires=LATER.strftime("%Y-%m-%dT%H:%M:%SZ"))
    envelope = InTotoEnvelope.from_signable(layout)
    envelope.create_signature(CryptoSigner(owner, SSlibKey.from_crypto(owner.public_key(), scheme="ecdsa-sha2-nistp256")))
    with pytest.raises(SignatureError, match="never runs layout commands"):
        verify_link(json.dumps(envelope.to_dict()).encode(), [owner.public_key()], _link(functionary),
                    index_digest=INDEX)


def test_garbage_layout(parties: tuple[keys.PrivateKey, KeySigner]) -> None:
    owner, functionary = parties
    with pytest.raises(SignatureError, match="not a valid in-toto layout"):
        verify_link(b"{}", [owner.public_key()], _link(functionary), index_digest=INDEX)
