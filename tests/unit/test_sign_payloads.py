"""Signed payloads: cosign's simple-signing bytes and in-toto statements."""

from __future__ import annotations

import json

import pytest

from pkgtool.sign import SignatureError
from pkgtool.sign.payloads import (
    Subject,
    check_statement_subject,
    go_json,
    intoto_statement,
    parse_simple_signing_payload,
    parse_statement,
    simple_signing_payload,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def test_simple_signing_payload_exact_bytes() -> None:
    payload = simple_signing_payload(docker_reference="127.0.0.1:5000/org/pkg", manifest_digest=DIGEST)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/org/pkg"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


def test_simple_signing_optional_is_sorted_and_go_escaped() -> None:
    payload = simple_signing_payload(
        docker_reference="r.example/a", manifest_digest=DIGEST,
        optional={"z": "1", "a": "x<y>&z", "m": "é"},
    )
    assert payload.endswith(
        b'"optional":{"a":"x\\u003cy\\u003e\\u0026z","m":"\xc3\xa9","z":"1"}}'
    )
    parsed = parse_simple_signing_payload(payload)
    assert parsed.optional == {"a": "x<y>&z", "m": "é", "z": "1"}
    assert (parsed.docker_reference, parsed.manifest_digest) == ("r.example/a", DIGEST)


@pytest.mark.parametrize("reference", ["r.example/a:tag", "r.example/a@sha256:00", "", "Upper/Case"])
def test_simple_signing_rejects_references_with_tags_or_digests(reference: str) -> None:
    with pytest.raises(ValueError):
        simple_signing_payload(docker_reference=reference, manifest_digest=DIGEST)


def test_simple_signing_rejects_bad_digest() -> None:
    with pytest.raises(Exception, match="invalid digest"):
        simple_signing_payload(docker_reference="r/a", manifest_digest="sha256:xyz")


def test_parse_simple_signing_rejects_wrong_type_and_junk() -> None:
    doc = json.loads(simple_signing_payload(docker_reference="r/a", manifest_digest=DIGEST))
    doc["critical"]["type"] = "something else"
    with pytest.raises(SignatureError, match="unknown type"):
        parse_simple_signing_payload(json.dumps(doc).encode())
    with pytest.raises(SignatureError, match="not valid JSON"):
        parse_simple_signing_payload(b"{nope")
    with pytest.raises(SignatureError, match="lacks field"):
        parse_simple_signing_payload(b'{"critical":{}}')


def test_go_json_escapes_like_go() -> None:
    assert go_json({"k": "a\u2028b<"}) == b'{"k":"a\\u2028b\\u003c"}'


def test_intoto_statement_v1_shape_and_determinism() -> None:
    payload = intoto_statement(
        subjects=[Subject("127.0.0.1:5000/org/pkg", DIGEST)],
        predicate_type="https://slsa.dev/provenance/v1",
        predicate={"b": 1, "a": {"y": 2, "x": 1}},
    )
    assert payload == (
        b'{"_type":"https://in-toto.io/Statement/v1",'
        b'"subject":[{"name":"127.0.0.1:5000/org/pkg","digest":{"sha256":"' + b"ab" * 32 + b'"}}],'
        b'"predicateType":"https://slsa.dev/provenance/v1",'
        b'"predicate":{"a":{"x":1,"y":2},"b":1}}'
    )
    statement = parse_statement(payload)
    assert statement.subject_digests() == {DIGEST}
    assert statement.predicate == {"a": {"x": 1, "y": 2}, "b": 1}
    check_statement_subject(statement, DIGEST)


def test_statement_about_another_image_is_rejected() -> None:
    statement = parse_statement(intoto_statement(
        subjects=[Subject("r/a", OTHER)], predicate_type="https://spdx.dev/Document", predicate={},
    ))
    with pytest.raises(SignatureError, match=f"is about {OTHER}, not about {DIGEST}"):
        check_statement_subject(statement, DIGEST)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"_type": "x", "subject": [], "predicateType": "p"}, "unknown _type"),
        ({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "p"}, "no subject"),
        ({"_type": "https://in-toto.io/Statement/v1", "subject": [{"name": "a", "digest": {"sha512": "00"}}],
          "predicateType": "p"}, "lacks a sha256"),
        ({"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": "ab" * 32}}]}, "predicateType"),
    ],
)
def test_malformed_statements(document: dict[str, object], reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        parse_statement(json.dumps(document).encode())
