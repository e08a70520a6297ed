"""Build planning and publishing without BuildKit: what a run must build, decided the same
way from the registry (a fake one here) and from the local cache, and per-arch pushes and
the index written from the cache (tests/integration/test_build.py drives the real stack)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeregistry
import pytest
from sourcesuite import build_image

from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.layout import Layout
from pkgtool.oci.reference import parse_reference
from pkgtool.oci.registry import RegistryClient
from pkgtool.oci.source import ImageSource
from pkgtool.pkgbuild.plan import BuildOptions, Target, local_name, plan_targets
from pkgtool.pkgbuild.push import push_arch_manifest, push_index, store_local
from pkgtool.pkggraph import PackageGraph, load_graph


@pytest.fixture
def graph(tmp_path: Path) -> PackageGraph:
    package = tmp_path / "repo" / "pkg" / "app"
    package.mkdir(parents=True)
    (package / "build.yml").write_text("image: app\norg: org\narches: [amd64, arm64]\n")
    (package / "Dockerfile").write_text("FROM scratch\nCOPY build.yml /\n")
    return load_graph([package], tmp_path / "repo", check_git=False)


@pytest.fixture
def fake() -> Iterator[RegistryClient]:
    with fakeregistry.running() as (address, _store), RegistryClient(address, retries=0) as client:
        yield client


def _images(tmp_path: Path) -> tuple[Layout, dict[str, Descriptor]]:
    """Two per-arch images in a cache (built by the ImageSource suite's helper)."""
    layout = Layout(tmp_path / "built")
    layout.ensure()
    image = build_image(layout, parse_reference("registry.test/org/scratch:x"))
    return layout, image.manifests


def _plan(graph: PackageGraph, source: ImageSource, registry: str, where: str, **options: object) -> Target:
    (target,) = plan_targets(graph, BuildOptions(registry=registry, **options), source, where=where)  # type: ignore[arg-type]
    return target


def test_the_registry_plan_follows_what_the_registry_has(graph: PackageGraph, fake: RegistryClient,
                                                          tmp_path: Path) -> None:
    package = graph.packages[0]
    assert _plan(graph, fake, fake.registry, "registry").reason == "not in the registry"
    built, manifests = _images(tmp_path)
    push_arch_manifest(fake, built, repository="org/app", tag=package.tag, arch="amd64", manifest=manifests["amd64"])
    target = _plan(graph, fake, fake.registry, "registry")
    assert (target.build, target.reason, list(target.reuse)) == (("arm64",), "missing arm64", ["amd64"])
    push_arch_manifest(fake, built, repository="org/app", tag=package.tag, arch="arm64", manifest=manifests["arm64"])
    target = _plan(graph, fake, fake.registry, "registry")
    assert (target.build, target.reason) == ((), "index missing (every arch is in the registry)")
    index = push_index(fake, repository="org/app", tag=package.tag, ours=dict(target.reuse))
    assert index.media_type == mediatypes.OCI_INDEX
    target = _plan(graph, fake, fake.registry, "registry")
    assert target.up_to_date and target.reason == "up to date"
    assert _plan(graph, fake, fake.registry, "registry", platforms=("arm64",)).wanted == ("arm64",)
    assert _plan(graph, fake, fake.registry, "registry", force=True).build == ("amd64", "arm64")


def test_the_cache_plan_is_the_same_planner_over_the_cache(graph: PackageGraph, tmp_path: Path) -> None:
    package = graph.packages[0]
    registry = "127.0.0.1:5000"
    built, manifests = _images(tmp_path)
    assert _plan(graph, built, registry, "cache").reason == "not in the cache"
    ours = {arch: Descriptor(d.media_type, d.digest, d.size, platform=Platform("linux", arch))
            for arch, d in manifests.items()}
    names = {arch: local_name(registry, package, arch) for arch in ours}
    store_local(built, name=local_name(registry, package), ours=ours, arch_names=names)
    target = _plan(graph, built, registry, "cache")
    assert target.up_to_date and set(target.reuse) == {"amd64", "arm64"}
