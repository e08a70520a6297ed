"""Image reference parsing: Docker's defaults and a clear error for every malformed shape."""

from __future__ import annotations

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.oci.reference import Reference, parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", ("docker.io", "library/alpine", None, None)),
        ("alpine:3.19", ("docker.io", "library/alpine", "3.19", None)),
        ("linuxkit/init:v1.0", ("docker.io", "linuxkit/init", "v1.0", None)),
        ("docker.io/alpine", ("docker.io", "library/alpine", None, None)),
        ("index.docker.io/library/alpine", ("docker.io", "library/alpine", None, None)),
        ("registry-1.docker.io/org/img", ("docker.io", "org/img", None, None)),
        ("127.0.0.1:5000/org/img:tag", ("127.0.0.1:5000", "org/img", "tag", None)),
        ("127.0.0.1:5000/img", ("127.0.0.1:5000", "img", None, None)),
        ("localhost/img", ("localhost", "img", None, None)),
        ("localhost:5000/a/b/c:t", ("localhost:5000", "a/b/c", "t", None)),
        ("ghcr.io/org/img@" + D, ("ghcr.io", "org/img", None, D)),
        ("ghcr.io/org/img:t@" + D, ("ghcr.io", "org/img", "t", D)),
        ("[::1]:5000/img:t", ("[::1]:5000", "img", "t", None)),
        ("example.com/a_b/c__d/e-f/g.h", ("example.com", "a_b/c__d/e-f/g.h", None, None)),
        ("my-registry.local:443/x", ("my-registry.local:443", "x", None, None)),
        ("org/img:_Tag.1-x", ("docker.io", "org/img", "_Tag.1-x", None)),
        ("foo/bar", ("docker.io", "foo/bar", None, None)),  # "foo" has no '.', ':': not a host
    ],
)
def test_good_references(text: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == expected
    # The canonical form parses back to the same value.
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "it is empty"),
        ("Alpine", "must be lowercase"),
        ("org/Img:t", "must be lowercase"),
        ("img:", "empty tag"),
        ("img@", "empty digest"),
        ("img@sha256:abc", "bad digest"),
        ("img@md5:" + "a" * 32, "bad digest"),
        ("img@" + D + "@" + D, "more than one '@'"),
        ("img:-tag", "bad tag"),
        ("img:" + "t" * 129, "bad tag"),
        ("img:a/b", "bad registry host"),
        ("a//b", "empty path component"),
        ("a/b/", "empty path component"),
        ("127.0.0.1:5000/", "no repository name"),
        ("-bad.host/img", "bad registry host"),
        ("host:port/img", "bad registry host"),
        ("img name", "whitespace"),
        ("img\n", "whitespace"),
        ("a..b", "bad repository component"),
        ("a/b.", "bad repository component"),
        ("x" * 300, "longer than 255"),
        ("img:t:u", "bad repository component"),
    ],
)
def test_bad_references_give_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(PkgtoolError) as caught:
        parse_reference(text)
    text_out = str(caught.value)
    assert message in text_out
    assert "\n" not in text_out and text_out.startswith("invalid image reference")


def test_str_locator_and_name() -> None:
    ref = parse_reference("127.0.0.1:5000/org/img")
    assert str(ref) == "127.0.0.1:5000/org/img"
    assert ref.locator == "latest"
    assert ref.name == "127.0.0.1:5000/org/img"
    pinned = ref.with_tag("v1").with_digest(D)
    assert str(pinned) == f"127.0.0.1:5000/org/img:v1@{D}"
    assert pinned.locator == D


def test_with_tag_drops_digest_and_validates() -> None:
    ref = parse_reference(f"reg.io/img@{D}")
    assert ref.with_tag("sha256-" + "ab" * 32) == Reference("reg.io", "img", "sha256-" + "ab" * 32, None)
    with pytest.raises(PkgtoolError, match="bad tag"):
        ref.with_tag("no spaces")
    with pytest.raises(PkgtoolError, match="bad digest"):
        ref.with_digest("sha256:xyz")


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse_reference("reg.io/img:t")
    assert {ref, parse_reference("reg.io/img:t")} == {ref}
    with pytest.raises(AttributeError):
        ref.tag = "other"  # type: ignore[misc]


def test_default_registry_can_be_changed() -> None:
    ref = parse_reference("org/img:t", default_registry="127.0.0.1:5000")
    assert (ref.registry, ref.repository) == ("127.0.0.1:5000", "org/img")
    assert Reference.parse("img").repository == "library/img"
