"""pkgtool.hashing (the content hash) and pkgtool.gitstate (the -dirty suffix)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pkgtool import gitstate, hashing
from pkgtool.errors import PkgtoolError
from pkgtool.pkggraph import load_graph
from pkgtool.spec.package import load_package


def make_pkg(root: Path, extra_yml: str = "") -> Path:
    d = root / "pkg" / "app"
    (d / "src" / "sub").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (d / "build.yml").write_text("image: app\n" + extra_yml)
    (d / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (d / "src" / "main.c").write_text("int main(){}\n")
    (d / "src" / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (d / "src" / "sub" / "run.sh").chmod(0o755)
    (d / "link").symlink_to("src/main.c")
    (d / "empty").mkdir()
    return d


def tag(d: Path, **kwargs: object) -> str:
    return hashing.content_hash(load_package(d), **kwargs)  # type: ignore[arg-type]


def test_shape_and_determinism(tmp_path: Path) -> None:
    d = make_pkg(tmp_path)
    first = tag(d)
    assert len(first) == 40 and int(first, 16) >= 0
    assert tag(d) == first


def test_same_inputs_in_another_checkout_path(tmp_path: Path) -> None:
    d = make_pkg(tmp_path / "one")
    copy = tmp_path / "two" / "deeper"
    shutil.copytree(tmp_path / "one", copy, symlinks=True)
    assert tag(d) == tag(copy / "pkg" / "app")


def test_metadata_noise_does_not_change_the_hash(tmp_path: Path) -> None:
    d = make_pkg(tmp_path)
    # build.yml is sent in the build context like any file (COPY . / would copy it), so its
    # bytes only stop counting when .dockerignore keeps it out of the context.
    (d / ".dockerignore").write_text("build.yml\n")
    before = tag(d)
    os.utime(d / "src" / "main.c", (1, 1))
    (d / "src" / "main.c").chmod(0o600)  # not executable before or after
    (d / "src" / "sub" / "run.sh").chmod(0o700)  # still owner-executable
    (d / "src").chmod(0o700)
    if os.geteuid() == 0:
        os.chown(d / "src" / "main.c", 1234, 5678)
    # Then build.yml's comments, key order and explicit defaults do not matter, meaning does.
    (d / "build.yml").write_text("# a comment\narches: [linux/amd64, arm64, s390x]\nimage: app\nnetwork: false\n")
    assert tag(d) == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: (d / "src" / "main.c").write_text("int main(){return 1;}\n"), id="content"),
        pytest.param(lambda d: (d / "src" / "main.c").chmod(0o755), id="exec-bit"),
        pytest.param(lambda d: (d / "src" / "new.c").write_text(""), id="new-file"),
        pytest.param(lambda d: (d / "empty" / "dir").mkdir(), id="new-empty-dir"),
        pytest.param(lambda d: (d / "src" / "main.c").rename(d / "src" / "moved.c"), id="rename"),
        pytest.param(lambda d: ((d / "link").unlink(), (d / "link").symlink_to("src")), id="symlink-target"),
        pytest.param(lambda d: (d / "Dockerfile").write_text("FROM scratch\n"), id="dockerfile"),
        pytest.param(lambda d: (d / "build.yml").write_text("image: app\narches: [amd64]\n"), id="arches"),
        pytest.param(lambda d: (d / "build.yml").write_text("image: app\nbuildArgs: [A=1]\n"), id="build-yml-arg"),
        pytest.param(lambda d: (d / "build.yml").write_text("image: app\nnetwork: true\n"), id="network"),
    ],
)
def test_input_changes_change_the_hash(tmp_path: Path, change: Callable[[Path], object]) -> None:
    d = make_pkg(tmp_path)
    before = tag(d)
    change(d)
    assert tag(d) != before


def test_parameters_change_the_hash(tmp_path: Path) -> None:
    d = make_pkg(tmp_path)
    base = tag(d)
    assert tag(d, build_args={"A": "1"}) != base
    assert tag(d, build_args={"A": "1"}) != tag(d, build_args={"A": "2"})
    assert tag(d, arches=["amd64"]) != base
    assert tag(d, dep_tags={"pkgtool/base": "1" * 40}) != base
    assert tag(d, dep_tags={"pkgtool/base": "1" * 40}) != tag(d, dep_tags={"pkgtool/base": "2" * 40})
    # Passing the defaults explicitly is the same as not passing them.
    assert tag(d, arches=["amd64", "arm64", "s390x"], build_args={}, dep_tags={}) == base


def test_build_yml_bytes_count_when_in_the_context(tmp_path: Path) -> None:
    d = make_pkg(tmp_path)
    before = tag(d)
    (d / "build.yml").write_text("# only a comment added\nimage: app\n")
    assert tag(d) != before


def test_dockerignore(tmp_path: Path) -> None:
    d = make_pkg(tmp_path)
    (d / "notes.tmp").write_text("a")
    (d / "cache").mkdir()
    (d / "cache" / "blob").write_text("a")
    (d / ".dockerignore").write_text("*.tmp\ncache\nDockerfile\n")
    before = tag(d)
    # Ignored files do not count...
    (d / "notes.tmp").write_text("changed")
    (d / "cache" / "blob").write_text("changed")
    (d / "cache" / "another").write_text("new")
    assert tag(d) == before
    # ...but the Dockerfile always does (BuildKit reads it whatever .dockerignore says),
    (d / "Dockerfile").write_text("FROM scratch\nCOPY src /\n")
    after_dockerfile = tag(d)
    assert after_dockerfile != before
    # and so does .dockerignore itself, and an exception re-including a file.
    (d / ".dockerignore").write_text("*.tmp\ncache\nDockerfile\n!cache/blob\n")
    assert tag(d) != after_dockerfile


def test_extra_sources(tmp_path: Path) -> None:
    d = make_pkg(tmp_path, "extra-sources: ['../../shared:vendor', '../../one.txt:etc/one.txt']\n")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "lib.c").write_text("lib")
    (tmp_path / "one.txt").write_text("1")
    before = tag(d)
    (tmp_path / "shared" / "lib.c").write_text("lib2")
    after = tag(d)
    assert after != before
    (tmp_path / "one.txt").write_text("2")
    assert tag(d) != after
    # .dockerignore applies at the extra source's place in the context.
    (d / ".dockerignore").write_text("vendor/*.log\n")
    ignored = tag(d)
    (tmp_path / "shared" / "debug.log").write_text("noise")
    assert tag(d) == ignored


def test_stat_cache_is_used_and_never_changes_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_pkg(tmp_path)
    cache = tmp_path / "statcache"
    uncached = tag(d)
    # Freshly written files are "racy" and not cached...
    assert tag(d, stat_cache_dir=cache) == uncached
    assert not cache.exists()
    # ...unless old enough (simulated by shrinking the window).
    monkeypatch.setattr(hashing, "_RACY_SECONDS", -10.0)
    assert tag(d, stat_cache_dir=cache) == uncached
    files = list(cache.iterdir())
    assert len(files) == 1 and b"main.c" in files[0].read_bytes()

    reads: list[Path] = []
    real = hashing.file_sha256

    def counting(path: Path, expected: os.stat_result | None = None) -> tuple[str, bool]:
        reads.append(path)
        return real(path, expected)

    monkeypatch.setattr(hashing, "file_sha256", counting)
    assert tag(d, stat_cache_dir=cache) == uncached
    # Only the Dockerfile is read (it is hashed on its own, outside the tree walk).
    assert reads == [d.resolve() / "Dockerfile"]
    # A change is seen through the cache, and a corrupt cache is just a miss.
    (d / "src" / "main.c").write_text("changed\n")
    changed = tag(d, stat_cache_dir=cache)
    assert changed != uncached and changed == tag(d)
    files[0].write_text("{not json")
    assert tag(d, stat_cache_dir=cache) == changed


def test_concurrent_workers_give_the_same_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = make_pkg(tmp_path)
    for i in range(600):
        (d / "src" / f"f{i:03d}").write_bytes(os.urandom(64) * (i % 7))
    one = tag(d, workers=1)
    monkeypatch.setattr(hashing, "_BATCH_FILES", 7)
    assert tag(d, workers=4) == one


# --------------------------------------------------------------------------- git

def git(cwd: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@e", GIT_CONFIG_GLOBAL="/dev/null")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_suffix_in_a_git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    d = make_pkg(tmp_path)
    other = tmp_path / "elsewhere.txt"
    git(tmp_path, "init", "-q")
    git(tmp_path, "remote", "add", "origin", "https://user:secret@example.com/org/repo.git")
    (tmp_path / ".gitignore").write_text("*.o\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "init")

    def state() -> gitstate.GitState:
        s = gitstate.git_state([d])
        assert s is not None
        return s

    clean = state()
    assert not clean.dirty
    assert clean.source_url == "https://example.com/org/repo.git"
    assert clean.revision == git(tmp_path, "rev-parse", "HEAD").strip()
    graph_tag = load_graph([d]).get(d).tag
    assert not graph_tag.endswith("-dirty")

    other.write_text("outside the package: not our business")
    assert not state().dirty
    (d / "ignored.o").write_text("git-ignored: not dirty")
    assert not state().dirty
    (d / "src" / "untracked.c").write_text("")
    assert state().dirty
    (d / "src" / "untracked.c").unlink()
    (d / "src" / "main.c").write_text("modified")
    assert state().dirty
    package = load_graph([d]).get(d)
    assert package.dirty and package.tag == package.content_hash + "-dirty"
    git(tmp_path, "add", "-A")
    assert state().dirty  # staged is still uncommitted
    git(tmp_path, "commit", "-qm", "two")
    assert not state().dirty
    (d / "src" / "main.c").unlink()
    assert state().dirty


def test_outside_git_there_is_no_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    d = make_pkg(tmp_path)
    assert gitstate.git_state([d]) is None
    package = load_graph([d]).get(d)
    assert not package.dirty and package.tag == package.content_hash


def test_strip_credentials() -> None:
    assert gitstate.strip_credentials("https://tok@github.com/a/b") == "https://github.com/a/b"
    assert gitstate.strip_credentials("https://u:p@h:8443/a") == "https://h:8443/a"
    assert gitstate.strip_credentials("git@github.com:a/b.git") == "git@github.com:a/b.git"


def test_bad_dockerignore_pattern_names_the_file(tmp_path: Path) -> None:
    d = make_pkg(tmp_path)
    (d / ".dockerignore").write_text("[unclosed\n")
    with pytest.raises(PkgtoolError, match=r"\.dockerignore: invalid \.dockerignore pattern"):
        tag(d)
