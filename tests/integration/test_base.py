"""The Debian base: amd64 bootstraps twice to identical digests; the full three-arch build.

The amd64 test bypasses the bootstrap cache on purpose (use_cache=False): reproducibility
is only shown by running mmdebstrap twice.  It takes ~1 min per bootstrap.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from pathlib import Path

import pytest

from pkgtool.base.base_build import build_base
from pkgtool.base.lockfile import LockMismatchError, format_lock
from pkgtool.base.recipe import load_recipe

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, *, image: str, arches: tuple[str, ...]) -> Path:
    recipe = load_recipe(REPO / "pkg/base/base.yml")
    for arch in arches:
        (tmp_path / f"versions.{arch}").write_text(recipe.lock_path(arch).read_text())
    path = tmp_path / "base.yml"
    path.write_text((REPO / "pkg/base/base.yml").read_text())
    return path


def _index(registry: str, repo: str, tag: str) -> dict[str, object]:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/manifests/{tag}",
                                 headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        data: dict[str, object] = json.loads(resp.read())
    return data


@pytest.mark.slow
def test_amd64_bootstraps_twice_to_identical_digests(registry: str, unique_repo: str, tmp_path: Path) -> None:
    recipe = dataclasses.replace(load_recipe(_recipe(tmp_path, image=unique_repo, arches=("amd64",))),
                                 image=unique_repo, arches=("amd64",))
    first = build_base(recipe, registry=registry, use_cache=False)
    second = build_base(recipe, registry=registry, use_cache=False, force=True)
    assert first.index_digest and first.index_digest == second.index_digest
    assert first.arches[0].layer_bytes == second.arches[0].layer_bytes
    assert _index(registry, unique_repo, first.tag)["manifests"]
    again = build_base(recipe, registry=registry)
    assert again.skipped and again.index_digest == first.index_digest


def test_lock_mismatch_fails_before_bootstrapping(registry: str, unique_repo: str, tmp_path: Path) -> None:
    path = _recipe(tmp_path, image=unique_repo, arches=("amd64",))
    lock = tmp_path / "versions.amd64"
    lines = dict(line.split() for line in lock.read_text().splitlines() if not line.startswith("#"))
    lines["libc6"] = "2.36-9+deb12u0"  # a version the mirror no longer has
    lock.write_text(format_lock(lines, header="tampered"))
    recipe = dataclasses.replace(load_recipe(path), image=unique_repo, arches=("amd64",))
    with pytest.raises(LockMismatchError, match=r"libc6 locked at 2.36-9\+deb12u0, mirror has .*pkgtool base lock"):
        build_base(recipe, registry=registry, use_cache=False)


@pytest.mark.slow
def test_all_arches_build_and_push_an_index(registry: str, unique_repo: str, tmp_path: Path) -> None:
    recipe = dataclasses.replace(load_recipe(_recipe(tmp_path, image=unique_repo, arches=("amd64", "arm64", "s390x"))),
                                 image=unique_repo)
    result = build_base(recipe, registry=registry)
    index = _index(registry, unique_repo, result.tag)
    manifests = index["manifests"]
    assert isinstance(manifests, list)
    assert [m["platform"]["architecture"] for m in manifests] == ["amd64", "arm64", "s390x"]
