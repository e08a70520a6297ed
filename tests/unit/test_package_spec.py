"""pkgtool.spec.package and pkgtool.pkggraph: build.yml validation, Dockerfile refs, the
dependency graph, and `pkgtool show-tag` end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pkgtool.cli import main
from pkgtool.errors import UsageError
from pkgtool.pkggraph import load_graph, repository_name
from pkgtool.spec.package import (
    DEFAULT_ARCHES,
    dockerfile_from_refs,
    find_packages,
    find_repo_root,
    load_package,
)


def package(root: Path, name: str, build_yml: str, dockerfile: str = "FROM scratch\n") -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "build.yml").write_text(build_yml)
    if dockerfile is not None:
        (d / "Dockerfile").write_text(dockerfile)
    return d


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    return tmp_path


def test_defaults(repo: Path) -> None:
    spec = load_package(package(repo, "pkg/a", "image: a\n"))
    assert spec.name == "pkgtool/a"
    assert spec.arches == DEFAULT_ARCHES
    assert spec.platforms == ("linux/amd64", "linux/arm64", "linux/s390x")
    assert spec.dockerfile == "Dockerfile" and spec.dockerfile_path.is_file()
    assert (spec.network, spec.disable_cache, spec.config) == (False, False, None)
    assert spec.render_tag("ab" * 20) == "ab" * 20
    assert spec.to_data()["tag"] == "{{.Hash}}"


def test_all_fields(repo: Path) -> None:
    (repo / "shared").mkdir()
    (repo / "shared" / "lib.sh").write_text("x")
    d = package(repo, "pkg/full", """\
image: full
org: myorg
arches: [linux/arm64, amd64]
dockerfile: docker/Dockerfile.build
network: true
disable-cache: true
config:
  capabilities: [CAP_NET_ADMIN]
  binds: ["/etc:/etc"]
  binds.add: ["/x:/x"]
  readonly: true
  command: [/bin/sh]
extra-sources:
  - ../../shared:vendor/shared
buildArgs: [GO_VERSION=1.22, EMPTY=]
tag: "v1-{{ .Hash }}"
depends: [../other]
labels: {team: os}
""", dockerfile=None)
    (d / "docker").mkdir()
    (d / "docker" / "Dockerfile.build").write_text("FROM scratch\n")
    spec = load_package(d)
    assert spec.name == "myorg/full"
    assert spec.arches == ("arm64", "amd64")
    assert spec.dockerfile == "docker/Dockerfile.build"
    assert spec.network and spec.disable_cache
    assert json.loads(spec.config_label() or "") == {
        "binds": ["/etc:/etc"], "binds.add": ["/x:/x"], "capabilities": ["CAP_NET_ADMIN"],
        "command": ["/bin/sh"], "readonly": True,
    }
    assert spec.extra_sources[0].dst == "vendor/shared"
    assert spec.extra_sources[0].path == (repo / "shared").resolve()
    assert dict(spec.build_args) == {"EMPTY": "", "GO_VERSION": "1.22"}
    assert spec.render_tag("f" * 40) == "v1-" + "f" * 40
    assert spec.depends == ("../other",)
    assert dict(spec.labels) == {"team": "os"}
    data = spec.to_data()
    assert str(repo) not in json.dumps(data)  # no checkout path in what gets hashed


def test_build_args_mapping_form(repo: Path) -> None:
    spec = load_package(package(repo, "p", "image: p\nbuildArgs: {B: x, A: 3}\n"))
    assert list(spec.build_args.items()) == [("A", "3"), ("B", "x")]


@pytest.mark.parametrize(
    ("yml", "message"),
    [
        ("image: a\nfrobnicate: 1\n", r"build\.yml:2: frobnicate: unknown key"),
        ("image: a\n\narches: amd64\n", r"build\.yml:3: arches: expected a list"),
        ("image: a\narches: [amd64, riscv64]\n", r"build\.yml:2: arches\[1\]: unknown arch 'riscv64' \(valid: amd64, arm64, s390x\)"),
        ("image: a\narches: [amd64, mips]\n", r"build\.yml:2: arches\[1\]: unknown arch 'mips' \(valid: amd64, arm64, s390x\)"),
        ("image: a\narches: [amd64, linux/amd64]\n", r"arches\[1\]: duplicate arch"),
        ("image: a\nnetwork: yes please\n", r"build\.yml:2: network: expected true or false"),
        ("org: x\n", r"build\.yml:1: 'image' is required"),
        ("image: UPPER\n", r"image: invalid repository name"),
        ("image: a\nconfig:\n  capabilities: CAP_X\n", r"build\.yml:3: config\.capabilities: expected a list"),
        ("image: a\nconfig:\n  bogus: 1\n", r"build\.yml:3: config\.bogus: unknown key"),
        ("image: a\nconfig:\n  image: x\n", r"config\.image: unknown key"),
        ("image: a\nbuildArgs: [NOEQUALS]\n", r"buildArgs\[0\]: expected 'KEY=VALUE'"),
        ("image: a\nbuildArgs: {A: true}\n", r"buildArgs\.A: expected a string"),
        ("image: a\ntag: fixed\n", r"tag: the tag template must contain \{\{\.Hash\}\}"),
        ("image: a\ntag: '{{.Hash}}-{{.Arch}}'\n", r"only \{\{\.Hash\}\}"),
        ("image: a\ntag: 'a b {{.Hash}}'\n", r"does not give a valid tag"),
        ("image: a\ndockerfile: ../Dockerfile\n", r"build\.yml:2: dockerfile: '\.\./Dockerfile' is outside the package"),
        ("image: a\ndockerfile: /etc/passwd\n", r"outside the package"),
        ("image: a\ndockerfile: missing.Dockerfile\n", r"build\.yml:2: dockerfile: .*missing\.Dockerfile: file not found"),
        ("image: a\nextra-sources: [nocolon]\n", r"extra-sources\[0\]: expected 'SRC:DST'"),
        ("image: a\nextra-sources: ['../../..:x']\n", r"outside the repository"),
        ("image: a\nextra-sources: ['.:../up']\n", r"inside the build context"),
        ("image: a\nextra-sources: ['nothere:x']\n", r"source 'nothere' does not exist"),
        ("image: a\nlabels: [x]\n", r"labels: expected a mapping"),
        ("image: a\nimage: b\n", r"build\.yml:2: image: duplicate key"),
        ("", r"empty build\.yml"),
        ("image: [unclosed\n", r"build\.yml:\d+: invalid YAML"),
    ],
)
def test_errors_name_file_line_and_field(repo: Path, yml: str, message: str) -> None:
    d = package(repo, "pkg/bad", yml)
    with pytest.raises(UsageError, match=message):
        load_package(d)


def test_dockerfile_symlink_escaping_is_refused(repo: Path) -> None:
    (repo / "outside").write_text("FROM scratch\n")
    d = package(repo, "pkg/a", "image: a\n", dockerfile=None)
    (d / "Dockerfile").symlink_to(repo / "outside")
    with pytest.raises(UsageError, match="through a symlink"):
        load_package(d)


def test_missing_files_are_one_line_errors(repo: Path) -> None:
    with pytest.raises(UsageError, match="package directory not found"):
        load_package(repo / "nope")
    (repo / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no build\.yml"):
        load_package(repo / "empty")
    d = package(repo, "nodockerfile", "image: a\n", dockerfile=None)
    with pytest.raises(UsageError, match=r"Dockerfile: file not found \(every package needs a Dockerfile\)") as exc:
        load_package(d)
    assert "\n" not in str(exc.value)


def test_repo_root_and_find_packages(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    a = package(tmp_path / "repo", "pkg/a", "image: a\n")
    package(tmp_path / "repo", "pkg/b", "image: b\n")
    package(tmp_path / "repo", ".hidden/c", "image: c\n")
    assert find_repo_root(a) == (tmp_path / "repo").resolve()
    assert [p.name for p in find_packages(tmp_path / "repo")] == ["a", "b"]
    lone = package(tmp_path, "lone", "image: lone\n")
    assert find_repo_root(lone) == lone.resolve()


def test_dockerfile_refs() -> None:
    text = """\
# syntax=docker/dockerfile:1
ARG BASE=pkgtool/base:abc
ARG GO
FROM --platform=$BUILDPLATFORM ${GO:-golang:1.22} AS build
RUN --mount=type=cache,target=/c,from=pkgtool/cache:1 \\
    make
FROM build AS test
from $BASE
COPY --from=build /out /out
COPY --from=pkgtool/tools:7 /bin/x /bin/x
COPY --from=0 /a /a
FROM scratch
FROM base-${TARGETARCH}
"""
    assert dockerfile_from_refs(text) == [
        "golang:1.22", "pkgtool/cache:1", "pkgtool/base:abc", "pkgtool/tools:7", "base-",
    ]
    got = dockerfile_from_refs(text, build_args={"GO": "go:2", "UNDECLARED": "x"}, target_arch="arm64")
    assert got[0] == "go:2" and got[-1] == "base-arm64"


def test_dockerfile_refs_escape_directive() -> None:
    assert dockerfile_from_refs("# escape=`\nFROM `\n  alpine:3\n") == ["alpine:3"]


def test_repository_name() -> None:
    assert repository_name("127.0.0.1:5000/pkgtool/a:tag") == "pkgtool/a"
    assert repository_name("localhost/pkgtool/a@sha256:00") == "pkgtool/a"
    assert repository_name("pkgtool/a") == "pkgtool/a"
    assert repository_name("alpine:3") == "alpine"


# --------------------------------------------------------------------------- graph

def test_graph_orders_dependencies_and_propagates_tags(repo: Path) -> None:
    base = package(repo, "pkg/base2", "image: base2\n", "FROM scratch\nCOPY . /\n")
    mid = package(repo, "pkg/mid", "image: mid\n", "FROM 127.0.0.1:5000/pkgtool/base2:whatever\n")
    top = package(repo, "pkg/top", "image: top\ndepends: [../mid]\n", "FROM scratch\n")
    arg = package(repo, "pkg/arg", "image: arg\nbuildArgs: [IMG=pkgtool/base2]\n", "ARG IMG\nFROM alpine\n")
    lone = package(repo, "pkg/lone", "image: lone\n")
    graph = load_graph([top, arg, lone], check_git=False)
    names = [p.spec.image for p in graph.packages]
    assert names.index("base2") < names.index("mid") < names.index("top")
    assert names.index("base2") < names.index("arg")
    assert graph.get(mid).deps == (base.resolve(),)
    assert [sorted(p.spec.image for p in level) for level in graph.levels()] == [
        ["base2", "lone"], ["arg", "mid"], ["top"],
    ]
    before = {p.spec.image: p.tag for p in graph.packages}
    # Changing the base re-tags everything built on it, and nothing else.
    (base / "new-file").write_text("x")
    after = {p.spec.image: p.tag for p in load_graph([top, arg, lone], check_git=False).packages}
    assert {k for k in before if before[k] != after[k]} == {"base2", "mid", "top", "arg"}


def test_graph_cycle_is_a_clear_error(repo: Path) -> None:
    a = package(repo, "pkg/a", "image: a\ndepends: [pkgtool/b]\n")
    package(repo, "pkg/b", "image: b\n", "FROM pkgtool/c:1\n")
    package(repo, "pkg/c", "image: c\ndepends: [../a]\n")
    with pytest.raises(UsageError, match=r"dependency cycle: pkg/a -> pkg/b -> pkg/c -> pkg/a"):
        load_graph([a], check_git=False)


def test_graph_self_reference_and_broken_neighbours(repo: Path) -> None:
    a = package(repo, "pkg/a", "image: a\n", "FROM pkgtool/a:previous\nFROM pkgtool/gone:1\n")
    package(repo, "pkg/broken", "image: a\nbogus: 1\n")
    graph = load_graph([a], check_git=False)
    assert [p.spec.image for p in graph.packages] == ["a"]
    assert graph.skipped and "bogus" in graph.skipped[0][1]


def test_graph_bad_depends_path(repo: Path) -> None:
    a = package(repo, "pkg/a", "image: a\ndepends: [../nothere]\n")
    with pytest.raises(UsageError, match="not a package directory"):
        load_graph([a], check_git=False)


# --------------------------------------------------------------------------- CLI

def test_show_tag_cli(repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The stat cache goes to the work cache, never to the OCI layout cache.
    monkeypatch.setenv("PKGTOOL_WORK_CACHE", str(repo / "work-cache"))
    monkeypatch.delenv("PKGTOOL_REGISTRY", raising=False)
    a = package(repo, "pkg/a", "image: a\n")
    b = package(repo, "pkg/b", "image: b\norg: other\n", "FROM pkgtool/a\n")
    assert main(["show-tag", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"pkgtool/a:[0-9a-f]{40}", out[0])
    assert re.fullmatch(r"other/b:[0-9a-f]{40}", out[1])
    assert main(["show-tag", "--canonical", "--registry", "reg.example:5000", str(b)]) == 0
    assert capsys.readouterr().out.strip() == "reg.example:5000/" + out[1]
    assert main(["show-tag", "--canonical", str(a)]) == 0
    assert capsys.readouterr().out.strip() == "127.0.0.1:5000/" + out[0]
    # A build arg is part of the hash.
    assert main(["show-tag", "--build-arg", "X=1", str(a)]) == 0
    assert capsys.readouterr().out.strip() != out[0]


def test_show_tag_cli_errors(repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKGTOOL_WORK_CACHE", str(repo / "work-cache"))
    bad = package(repo, "pkg/bad", "image: a\narches: [sparc]\n")
    assert main(["show-tag", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "build.yml:2: arches[0]: unknown arch 'sparc'" in err and err.count("\n") == 1
    assert main(["show-tag", str(repo / "missing")]) == 2
    assert "package directory not found" in capsys.readouterr().err
