"""Finding and rewriting image references in Dockerfiles and image YAMLs."""

from __future__ import annotations

from pathlib import Path

from pkgtool.pin.refs import dockerfile_refs, parse_ref, rewrite, yaml_refs

DIGEST = "sha256:" + "ab" * 32


def test_parse_ref_prefixes_tags_and_digests(tmp_path: Path) -> None:
    f = tmp_path / "Dockerfile"
    cases = {
        "${PKGTOOL_REGISTRY}/pkgtool/base:abc@" + DIGEST: ("${PKGTOOL_REGISTRY}/", "pkgtool/base", "abc", DIGEST),
        "$REG/pkgtool/base:abc": ("$REG/", "pkgtool/base", "abc", None),
        "127.0.0.1:5000/pkgtool/init:1-x@" + DIGEST: ("127.0.0.1:5000/", "pkgtool/init", "1-x", DIGEST),
        "pkgtool/init": ("", "pkgtool/init", None, None),
        "localhost/a/b:c": ("localhost/", "a/b", "c", None),
        "alpine:3.19": ("", "alpine", "3.19", None),
    }
    for text, (prefix, repository, tag, digest) in cases.items():
        ref = parse_ref(text, file=f, line=1)
        assert ref is not None, text
        assert (ref.prefix, ref.repository, ref.tag, ref.digest) == (prefix, repository, tag, digest), text
    assert parse_ref("Not A Ref", file=f, line=1) is None


def test_dockerfile_refs_skip_stages_and_scratch(tmp_path: Path) -> None:
    df = tmp_path / "Dockerfile"
    df.write_text(
        "ARG PKGTOOL_REGISTRY=127.0.0.1:5000\n"
        f"FROM --platform=$BUILDPLATFORM ${{PKGTOOL_REGISTRY}}/pkgtool/base:t1@{DIGEST} AS build\n"
        "FROM build AS second\n"
        "FROM scratch\n"
        "COPY --from=second /x /x\n"
        "COPY --from=pkgtool/tools:t2 /y /y\n"
        "RUN --mount=type=bind,from=pkgtool/mnt:t3,target=/m true\n"
    )
    found = [(r.line, r.repository, r.tag) for r in dockerfile_refs(df)]
    assert found == [(2, "pkgtool/base", "t1"), (6, "pkgtool/tools", "t2"), (7, "pkgtool/mnt", "t3")]


def test_rewrite_keeps_everything_else(tmp_path: Path) -> None:
    y = tmp_path / "x.yml"
    y.write_text("# comment\nkernel:\n  image: pkgtool/kernel:old  # keep me\n  cmdline: console=ttyS0\n"
                 "init:\n  - 127.0.0.1:5000/pkgtool/init:old\n")
    y.chmod(0o640)
    refs = yaml_refs(y)
    assert [(r.line, r.repository) for r in refs] == [(3, "pkgtool/kernel"), (6, "pkgtool/init")]
    rewrite(y, [(r, r.with_pin("new", DIGEST)) for r in refs])
    text = y.read_text()
    assert f"  image: pkgtool/kernel:new@{DIGEST}  # keep me\n" in text
    assert f"  - 127.0.0.1:5000/pkgtool/init:new@{DIGEST}\n" in text
    assert text.startswith("# comment\n") and (y.stat().st_mode & 0o777) == 0o640
