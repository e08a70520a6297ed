"""The from-source kernel image is an in-repo producer: lint checks its pins and
update-hashes re-pins them, but never compiles one as a side effect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pkgtool.errors import PkgtoolError
from pkgtool.pin.lint import lint
from pkgtool.pin.producers import load_producers
from pkgtool.pin.update import Updater
from pkgtool.progress import Progress

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def _repo(tmp_path: Path, tag: str) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "kernel", root / "kernel")
    (root / "examples").mkdir()
    (root / "examples" / "small.yml").write_text(
        f"kernel:\n  image: 127.0.0.1:5000/pkgtool/kernel-source:{tag}@{DIGEST}\n  cmdline: console=ttyS0\n")
    return root


def _source_producer(root: Path):  # type: ignore[no-untyped-def]
    (producer,) = load_producers(root).by_repository["pkgtool/kernel-source"]
    return producer


def test_a_stale_from_source_kernel_pin_is_found(tmp_path: Path) -> None:
    root = _repo(tmp_path, "6.1.192-3-0000000000000000")
    current = _source_producer(root)
    assert current.kind == "kernel-source" and current.tag.startswith("6.1.192-3-")
    (finding,) = lint(root)
    assert f"is stale: kernel/bookworm-6.1/kernel.yml is now pkgtool/kernel-source:{current.tag}" in finding.message
    assert finding.format(root).startswith("examples/small.yml:2: ")


def test_a_current_from_source_kernel_pin_passes(tmp_path: Path) -> None:
    root = _repo(tmp_path, "placeholder")
    tag = _source_producer(root).tag
    (root / "examples" / "small.yml").write_text(
        f"kernel:\n  image: 127.0.0.1:5000/pkgtool/kernel-source:{tag}@{DIGEST}\n  cmdline: console=ttyS0\n")
    assert lint(root) == []


class _EmptyRegistry:
    registry = "127.0.0.1:5000"

    def head_manifest(self, repository: str, tag: str) -> None:
        return None


def test_update_hashes_asks_for_a_compile_instead_of_starting_one(tmp_path: Path) -> None:
    root = _repo(tmp_path, "6.1.192-3-0000000000000000")
    with Progress("plain") as progress:
        updater = Updater(root, registry="127.0.0.1:5000", client=_EmptyRegistry(),  # type: ignore[arg-type]
                          build=True, progress=progress, log=lambda _m: None)
        with pytest.raises(PkgtoolError, match=r"compile it first: pkgtool kernel build --from-source kernel/bookworm-6.1/kernel.yml"):
            updater.run()
    assert "0000000000000000" in (root / "examples" / "small.yml").read_text()  # nothing rewritten
