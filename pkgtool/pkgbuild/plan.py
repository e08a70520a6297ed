"""What a build run has to do: which packages, which arches, and why.

Only the registry (or, with ``--no-push``, the local cache) is consulted, never BuildKit,
so planning costs one manifest GET per package (plus one HEAD per arch that the index
lacks) and imports nothing heavier than the HTTP client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pkgtool import gitstate
from pkgtool.arches import ARCHES
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.reference import Reference
from pkgtool.oci.source import ImageSource, manifest_or_none
from pkgtool.pkggraph import Package, PackageGraph, repository_name
from pkgtool.spec.package import (
    dockerfile_from_refs,
    merge_build_args,
    normalize_arch,
)

if TYPE_CHECKING:
    from pkgtool.buildkit.tls import TLSOptions
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.pkgbuild.builders_config import BuilderChoice
    from pkgtool.pkgbuild.cache import CacheLocation


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``pkgtool build`` was asked, resolved to values."""

    registry: str
    platforms: tuple[str, ...] | None = None  # arches; None: each package's own
    force: bool = False
    push: bool = True
    build_args: Mapping[str, str] = field(default_factory=dict)
    allow_dirty: bool = False
    builder: str | None = None
    jobs: int = 2
    sign: bool = False  # sign and attest what this run pushes (the signer comes with the run)
    # arch -> builder (--builders); None: $PKGTOOL_BUILDERS or builders.toml, read at build time.
    builders: Mapping[str, BuilderChoice] | None = None
    builder_tls: TLSOptions | None = None  # --tls* flags, for every tcp:// builder without its own
    cache_from: tuple[CacheLocation, ...] = ()
    cache_to: CacheLocation | None = None
    # False (--no-index): push each arch's <tag>-<arch> only, for sharded publishing where
    # one later job writes the index (`pkgtool manifest --complete`).
    push_index: bool = True


@dataclass(frozen=True)
class Target:
    """One package of the run and the arches it needs built now."""

    package: Package
    wanted: tuple[str, ...]  # arches the index must list after this run
    build: tuple[str, ...]  # arches to build now (empty: up to date)
    reuse: Mapping[str, Descriptor]  # arch -> manifest already in the registry, kept as is
    reason: str

    @property
    def up_to_date(self) -> bool:
        return not self.build and not self.index_missing

    @property
    def index_missing(self) -> bool:
        """Every arch is there but the index is not (an earlier run stopped in between)."""
        return self.reason.startswith("index missing")

    @property
    def dir(self) -> Path:
        return self.package.dir


def parse_platforms(value: str | None) -> tuple[str, ...] | None:
    """``linux/amd64,arm64`` -> ``("amd64", "arm64")``; None when not given."""
    if value is None:
        return None
    out: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        arch = normalize_arch(item)
        if arch is None or (item.count("/") > 1):
            raise UsageError(f"--platforms: unknown platform {item!r} (valid: {', '.join('linux/' + a for a in ARCHES)})")
        if arch not in out:
            out.append(arch)
    if not out:
        raise UsageError("--platforms: no platform given")
    return tuple(out)


def wanted_arches(package: Package, platforms: Sequence[str] | None) -> tuple[str, ...]:
    """The package's arches, narrowed to ``--platforms`` when given (build.yml order)."""
    if platforms is None:
        return package.spec.arches
    return tuple(a for a in package.spec.arches if a in platforms)


def check_pushable(graph: PackageGraph, options: BuildOptions) -> None:
    """A ``-dirty`` tag names sources nobody else can rebuild: refuse to publish it."""
    if not options.push or options.allow_dirty:
        return
    dirty = [p for p in graph.packages if p.dirty]
    if dirty:
        names = ", ".join(display(graph, p) for p in dirty)
        raise UsageError(
            f"uncommitted changes in {names} (tag suffix {gitstate.DIRTY_SUFFIX}): commit them, "
            "or pass --allow-dirty to push anyway, or --no-push to keep the build local"
        )


def check_dependency_pins(graph: PackageGraph, options: BuildOptions) -> None:
    """A Dockerfile that uses an in-repo package must name that package's current tag.

    Otherwise the dependent would be re-tagged for the new dependency but built from the old
    one: exactly the silent staleness LinuxKit users complain about.
    """
    by_name = {p.spec.name: p for p in graph.packages}
    for package in graph.packages:
        spec = package.spec
        args = merge_build_args(spec, options.build_args)
        text = spec.dockerfile_path.read_text(encoding="utf-8", errors="replace")
        for arch in spec.arches:
            for ref in dockerfile_from_refs(text, build_args=args, target_arch=arch):
                dep = by_name.get(repository_name(ref))
                if dep is None or dep.dir == package.dir:
                    continue
                tag = _ref_tag(ref)
                if tag is not None and tag not in (dep.tag, dep.clean_tag):
                    raise UsageError(
                        f"{display(graph, package)}/{spec.dockerfile}: uses {dep.spec.name}:{tag}, but "
                        f"{display(graph, dep)} is now {dep.spec.name}:{dep.clean_tag}; run "
                        "`pkgtool update-hashes` to build it and re-pin its dependents"
                    )


def _ref_tag(ref: str) -> str | None:
    name = ref.split("@", 1)[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[colon + 1:] if colon > slash else None


def display(graph: PackageGraph, package: Package) -> str:
    """How a package is named in messages: its directory relative to the repository."""
    try:
        return package.dir.relative_to(graph.repo_root).as_posix() or "."
    except ValueError:
        return str(package.dir)


def plan_targets(graph: PackageGraph, options: BuildOptions, source: ImageSource, *, where: str) -> list[Target]:
    """What ``source`` lacks at each package's tag: the registry for a pushing build, the
    local cache for ``--no-push`` (which keeps builds under the same names, see
    :func:`local_name`), so one planner serves both.  ``where`` names it in the reasons.

    A package whose index lists every wanted arch is up to date; arches that an earlier run
    (or another machine) pushed as ``<tag>-<arch>`` but whose index never got written are
    reused, not rebuilt.
    """
    targets = []
    for package in graph.packages:
        wanted = wanted_arches(package, options.platforms)
        if not wanted:
            targets.append(Target(package, (), (), {}, "no requested platform is in its arches"))
            continue
        if options.force:
            targets.append(Target(package, wanted, wanted, {}, "--force"))
            continue
        name = Reference(options.registry, package.spec.name, tag=package.tag)
        index = manifest_or_none(source, name)
        listed: dict[str, Descriptor] = {}
        if index is not None and index.is_index:
            for child in index.manifests:
                if child.platform is not None and child.platform.os == "linux":
                    listed.setdefault(child.platform.architecture, child)
        missing = [a for a in wanted if a not in listed]
        if not missing:
            targets.append(Target(package, wanted, (), listed, "up to date"))
            continue
        reuse = dict(listed)
        for arch in missing:
            found = source.resolve(name.with_tag(f"{package.tag}-{arch}"))
            if found is not None and found.media_type in mediatypes.MANIFEST_TYPES:
                reuse[arch] = Descriptor(found.media_type, found.digest, found.size, platform=Platform("linux", arch))
        build = tuple(a for a in wanted if a not in reuse)
        if not build:
            reason = f"index missing (every arch is in the {where})"
        elif index is None:
            reason = f"not in the {where}" if len(build) == len(wanted) else f"missing {', '.join(build)}"
        else:
            reason = f"index lacks {', '.join(build)}"
        targets.append(Target(package, wanted, build, reuse, reason))
    return targets


def local_name(registry: str, package: Package, arch: str | None = None) -> str:
    """The ref name under which ``--no-push`` keeps a build in the cache: the reference it
    would have in the registry."""
    suffix = f"-{arch}" if arch else ""
    return f"{registry}/{package.spec.name}:{package.tag}{suffix}"


def cpu_jobs() -> int:
    """Default number of packages built at once: arches of one package already run in
    parallel, so more than a couple of packages at a time only thrashes 2-core machines."""
    return max(1, min(4, (os.cpu_count() or 2) // 2 + 1))


def check_local_dependencies(graph: PackageGraph, targets: Sequence[Target], client: RegistryClient) -> None:
    """With ``--no-push`` every dependency must already be in the registry: BuildKit resolves
    ``FROM`` through a registry, never through pkgtool's local cache."""
    building = {t.package.dir for t in targets if t.build}
    for target in targets:
        if not target.build:
            continue
        for dep_dir in target.package.deps:
            dep = graph.get(dep_dir)
            if dep.dir in building or client.head_manifest(dep.spec.name, dep.tag) is None:
                raise PkgtoolError(
                    f"{display(graph, target.package)} depends on {display(graph, dep)} "
                    f"({dep.spec.name}:{dep.tag}), which is not in the registry: BuildKit pulls FROM "
                    f"images from a registry, so build {display(graph, dep)} without --no-push first"
                )
