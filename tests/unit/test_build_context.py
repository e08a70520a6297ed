"""Staging a build context with build.yml's extra-sources: a sync that keeps what is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pkgtool.pkgbuild.context import build_context
from pkgtool.spec.package import load_package


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PKGTOOL_WORK_CACHE", str(tmp_path / "work"))
    root = tmp_path / "repo"
    (root / "pkg" / "app" / "sub").mkdir(parents=True)
    (root / "pkg" / "lib").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "pkg/lib/helper.sh").write_text("echo helper\n")
    (root / "pkg/lib/dir/x").parent.mkdir()
    (root / "pkg/lib/dir/x").write_text("x\n")
    app = root / "pkg/app"
    (app / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (app / "build.yml").write_text("image: app\nextra-sources:\n  - ../lib/helper.sh:tools/helper.sh\n  - ../lib/dir:more\n")
    (app / "sub/a").write_text("a\n")
    os.link(app / "sub/a", app / "sub/a-link")
    os.symlink("sub/a", app / "link")
    return root


def tree(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = ("->" + os.readlink(path)) if path.is_symlink() else ("dir" if path.is_dir() else path.read_text())
    return out


def test_no_extra_sources_means_the_package_directory(repo: Path) -> None:
    (repo / "pkg/app/build.yml").write_text("image: app\n")
    spec = load_package(repo / "pkg/app")
    assert build_context(spec) == spec.dir


def test_staged_tree_and_incremental_sync(repo: Path) -> None:
    spec = load_package(repo / "pkg/app")
    ctx = build_context(spec)
    assert ctx != spec.dir
    assert tree(ctx) == {
        "Dockerfile": "FROM scratch\nCOPY . /\n", "build.yml": (repo / "pkg/app/build.yml").read_text(),
        "link": "->sub/a", "more": "dir", "more/x": "x\n", "sub": "dir", "sub/a": "a\n", "sub/a-link": "a\n",
        "tools": "dir", "tools/helper.sh": "echo helper\n",
    }
    assert os.path.samefile(ctx / "sub/a", ctx / "sub/a-link")  # a hard link stays one
    assert (ctx / "sub/a").stat().st_mtime_ns == (repo / "pkg/app/sub/a").stat().st_mtime_ns
    inode = (ctx / "Dockerfile").stat().st_ino

    # Change one source, remove another: the rest is not touched.
    (repo / "pkg/lib/helper.sh").write_text("echo changed\n")
    (repo / "pkg/lib/dir/x").unlink()
    again = build_context(load_package(repo / "pkg/app"))
    assert again == ctx
    assert (ctx / "tools/helper.sh").read_text() == "echo changed\n"
    assert not (ctx / "more/x").exists()
    assert (ctx / "Dockerfile").stat().st_ino == inode
