"""pkgtool.fswalk: fsutil's walk order and filters on a real directory tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.fswalk import follow_links, walk


def make(root: Path, *paths: str) -> None:
    """Create files (and dirs for names ending in '/')."""
    for p in paths:
        full = root / p
        if p.endswith("/"):
            full.mkdir(parents=True, exist_ok=True)
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(p)


def rels(root: Path, **kwargs: list[str]) -> list[str]:
    return [e.relpath for e in walk(root, **kwargs)]


def test_order_is_per_directory_bytewise_depth_first(tmp_path: Path) -> None:
    make(tmp_path, "a/x", "a-b", "a b", "a/y/z", "B", "b", "é", "z", "a.c", "_u")
    got = rels(tmp_path)
    # "a/x" right after "a" (fsutil compares "/" lowest), uppercase before lowercase,
    # the two-byte UTF-8 "é" after every ASCII name.
    assert got == ["B", "_u", "a", "a/x", "a/y", "a/y/z", "a b", "a-b", "a.c", "b", "z", "é"]


def test_order_matches_fsutil_path_comparison(tmp_path: Path) -> None:
    make(tmp_path, "a/b/c", "a/b-c", "a0", "a/b.c/d", "ab/", "a!/x")
    got = rels(tmp_path)

    def key(p: str) -> list[bytes]:
        return [os.fsencode(c) for c in p.split("/")]

    assert got == sorted(got, key=key)
    assert got.index("a/b/c") < got.index("a/b-c") < got.index("a/b.c")


def test_non_utf8_names_sort_by_bytes(tmp_path: Path) -> None:
    for name in (b"\xff", b"\xc3\xa9", b"z"):
        with open(os.path.join(os.fsencode(tmp_path), name), "wb"):
            pass
    assert [os.fsencode(r) for r in rels(tmp_path)] == [b"z", b"\xc3\xa9", b"\xff"]


def test_entry_fields_and_symlinks_not_followed(tmp_path: Path) -> None:
    make(tmp_path, "d/f")
    (tmp_path / "link").symlink_to("d")
    (tmp_path / "dangling").symlink_to("/nowhere")
    entries = {e.relpath: e for e in walk(tmp_path)}
    assert set(entries) == {"d", "d/f", "link", "dangling"}
    assert entries["link"].link_target == "d"
    assert entries["dangling"].link_target == "/nowhere"
    assert entries["d/f"].link_target is None
    assert entries["d"].is_dir and not entries["link"].is_dir
    assert entries["d/f"].abspath == tmp_path / "d" / "f"
    assert entries["d/f"].stat.st_size == 3


def test_excludes_skip_dirs_and_files(tmp_path: Path) -> None:
    make(tmp_path, "keep.txt", "skip.tmp", "build/out/x", "src/a.tmp", "src/a.c")
    assert rels(tmp_path, excludes=["*.tmp", "build"]) == ["keep.txt", "src", "src/a.c", "src/a.tmp"]
    assert rels(tmp_path, excludes=["**/*.tmp", "build"]) == ["keep.txt", "src", "src/a.c"]


def test_exception_reincludes_below_excluded_dir_and_sends_the_parents(tmp_path: Path) -> None:
    make(tmp_path, "build/out/keep.bin", "build/out/drop.bin", "build/log", "other")
    got = rels(tmp_path, excludes=["build", "!build/out/keep.bin"])
    # The excluded dirs are sent only as parents of what is re-included.
    assert got == ["build", "build/out", "build/out/keep.bin", "other"]
    got = rels(tmp_path, excludes=["build", "!**/keep.bin"])
    assert got == ["build", "build/out", "build/out/keep.bin", "other"]


def test_excluded_dir_without_reinclusion_is_not_sent(tmp_path: Path) -> None:
    make(tmp_path, "build/out/x", "keep")
    assert rels(tmp_path, excludes=["build", "!keep"]) == ["keep"]
    assert rels(tmp_path, excludes=["*", "!keep"]) == ["keep"]


def test_includes(tmp_path: Path) -> None:
    make(tmp_path, "a/b/c.txt", "a/b/d.txt", "a/e.txt", "x/y")
    assert rels(tmp_path, includes=["a/b/c.txt"]) == ["a", "a/b", "a/b/c.txt"]
    assert rels(tmp_path, includes=["a/b"]) == ["a", "a/b", "a/b/c.txt", "a/b/d.txt"]
    assert rels(tmp_path, includes=["**/c.txt"]) == ["a", "a/b", "a/b/c.txt"]


def test_followpaths_resolve_symlinks(tmp_path: Path) -> None:
    make(tmp_path, "real/Dockerfile", "other")
    (tmp_path / "Dockerfile").symlink_to("real/Dockerfile")
    assert follow_links(tmp_path, ["Dockerfile"]) == ["Dockerfile", "real/Dockerfile"]
    assert rels(tmp_path, followpaths=["Dockerfile"]) == ["Dockerfile", "real", "real/Dockerfile"]
    # A wildcard in the last component adds the pattern and the links' targets; absolute
    # targets are relative to the root, and ".." cannot climb above it (fsutil's rules).
    (tmp_path / "Dockerfile.abs").symlink_to("/real/Dockerfile")
    (tmp_path / "Dockerfile.out").symlink_to("../../etc/passwd")
    assert follow_links(tmp_path, ["Dockerfile*"]) == ["Dockerfile*", "etc/passwd", "real/Dockerfile"]


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PkgtoolError, match="not a directory"):
        list(walk(tmp_path / "missing"))
