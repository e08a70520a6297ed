"""Packages, their in-repo dependencies and their tags, in build order.

A package depends on another package of the same repository when

* its ``depends`` names that package's directory (relative to the depending package) or
  its image, or
* its Dockerfile uses that package's image (``FROM``, ``COPY --from=``, ``RUN --mount=from=``,
  for any of its arches, build args expanded), or
* one of its build args names that package's image.

Images are matched by repository name ``ORG/IMAGE``, with any registry prefix, tag or
digest ignored.  Anything else is an external image and is not built.  A package naming its
own image (say ``FROM`` an older build of itself) does not depend on itself.

The repository is :func:`pkgtool.spec.package.find_repo_root` of the first package; all
build.yml files below it are indexed by image.  Such a build.yml that does not load is
reported in :attr:`PackageGraph.skipped` (it cannot be depended on) rather than failing
every command in the repository.

Tags are computed deps-first: a package's content hash includes its dependencies' tags
(:mod:`pkgtool.hashing`), and a package whose sources or dependencies have uncommitted
changes gets the ``-dirty`` suffix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pkgtool import gitstate, hashing
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.spec.package import (
    BUILD_YML,
    PackageSpec,
    dockerfile_from_refs,
    find_packages,
    find_repo_root,
    load_package,
    merge_build_args,
)


@dataclass(frozen=True)
class Package:
    """A package with its resolved dependencies and its tag."""

    spec: PackageSpec
    deps: tuple[Path, ...]
    content_hash: str
    tag: str
    dirty: bool
    git: gitstate.GitState | None = field(default=None, compare=False)

    @property
    def dir(self) -> Path:
        return self.spec.dir

    @property
    def clean_tag(self) -> str:
        """The tag without the ``-dirty`` suffix: what the tag will be once the sources are
        committed.  Pins name it, because the image (which carries nothing from git) is the
        same either way."""
        return self.spec.render_tag(self.content_hash)

    @property
    def ref(self) -> str:
        """``ORG/IMAGE:TAG`` (no registry)."""
        return f"{self.spec.name}:{self.tag}"


@dataclass(frozen=True)
class PackageGraph:
    packages: tuple[Package, ...]  # dependencies before their dependents
    requested: tuple[Path, ...]
    repo_root: Path
    skipped: tuple[tuple[Path, str], ...] = ()

    def get(self, directory: Path) -> Package:
        wanted = Path(directory).resolve()
        for package in self.packages:
            if package.dir == wanted:
                return package
        raise KeyError(directory)

    def levels(self) -> list[list[Package]]:
        """Packages grouped so that each group depends only on earlier groups: the members
        of one group can be built in parallel."""
        depth: dict[Path, int] = {}
        for package in self.packages:
            depth[package.dir] = 1 + max((depth[d] for d in package.deps), default=-1)
        groups: list[list[Package]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for package in self.packages:
            groups[depth[package.dir]].append(package)
        return groups


def repository_name(ref: str) -> str:
    """``127.0.0.1:5000/org/img:tag@sha256:..`` -> ``org/img``."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        name = rest
    return name


class _Resolver:
    def __init__(self, repo_root: Path, *, build_args: Mapping[str, str] | None,
                 stat_cache_dir: Path | None, check_git: bool) -> None:
        self.repo_root = repo_root
        self.build_args = dict(build_args or {})
        self.stat_cache_dir = stat_cache_dir
        self.check_git = check_git
        self.specs: dict[Path, PackageSpec] = {}
        self._index: dict[str, list[Path]] | None = None
        self.skipped: list[tuple[Path, str]] = []
        self.done: dict[Path, Package] = {}
        self.order: list[Package] = []

    def display(self, directory: Path) -> str:
        try:
            rel = directory.resolve().relative_to(self.repo_root)
        except ValueError:
            return str(directory)
        return rel.as_posix() or "."

    def spec(self, directory: Path, shown: str | None = None) -> PackageSpec:
        key = directory.resolve()
        if key not in self.specs:
            self.specs[key] = load_package(directory, repo_root=self.repo_root, display=shown or self.display(key))
        return self.specs[key]

    def index(self) -> dict[str, list[Path]]:
        if self._index is None:
            self._index = {}
            for directory in find_packages(self.repo_root):
                try:
                    spec = self.spec(directory)
                except PkgtoolError as exc:
                    self.skipped.append((directory, str(exc)))
                    continue
                self._index.setdefault(spec.name, []).append(spec.dir)
        return self._index

    def by_image(self, ref: str, owner: PackageSpec) -> Path | None:
        name = repository_name(ref)
        if "/" not in name:
            return None  # official-library style names are never ours (ours are ORG/IMAGE)
        dirs = self.index().get(name, [])
        dirs = [d for d in dirs if d != owner.dir]
        if len(dirs) > 1:
            shown = ", ".join(self.display(d) for d in dirs)
            raise UsageError(f"{owner.source}: image {name!r} is built by several packages: {shown}")
        return dirs[0] if dirs else None

    def dependencies(self, spec: PackageSpec) -> list[Path]:
        deps: list[Path] = []

        def add(directory: Path | None) -> None:
            if directory is not None and directory != spec.dir and directory not in deps:
                deps.append(directory)

        for entry in spec.depends:
            candidate = (spec.dir / entry).resolve()
            if (candidate / BUILD_YML).is_file():
                add(candidate)
            elif entry.startswith((".", "/")):
                raise UsageError(f"{spec.source}: depends: {entry!r} is not a package directory")
            else:
                add(self.by_image(entry, spec))
        args = merge_build_args(spec, self.build_args)
        try:
            text = spec.dockerfile_path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise PkgtoolError(f"{spec.dockerfile_path}: cannot read: {exc.strerror or exc}") from None
        refs: list[str] = []
        for arch in spec.arches:
            for ref in dockerfile_from_refs(text, build_args=args, target_arch=arch):
                if ref not in refs:
                    refs.append(ref)
        for ref in refs:
            add(self.by_image(ref, spec))
        for value in args.values():
            if "/" in value and not any(c.isspace() for c in value):
                add(self.by_image(value, spec))
        return deps

    def visit(self, directory: Path, stack: list[Path], shown: str | None = None) -> Package:
        key = directory.resolve()
        if key in self.done:
            return self.done[key]
        if key in stack:
            cycle = [*stack[stack.index(key):], key]
            raise UsageError("dependency cycle: " + " -> ".join(self.display(p) for p in cycle))
        spec = self.spec(directory, shown)
        stack.append(key)
        dep_packages = [self.visit(d, stack) for d in self.dependencies(spec)]
        stack.pop()
        digest = hashing.content_hash(
            spec,
            dep_tags={d.spec.name: d.clean_tag for d in dep_packages},  # dirtiness is the suffix, not the hash
            build_args=self.build_args,
            stat_cache_dir=self.stat_cache_dir,
        )
        state = None
        if self.check_git:
            state = gitstate.git_state([spec.dir, *(e.path for e in spec.extra_sources)])
        dirty = bool(state and state.dirty) or any(d.dirty for d in dep_packages)
        tag = spec.render_tag(digest) + (gitstate.DIRTY_SUFFIX if dirty else "")
        package = Package(spec=spec, deps=tuple(d.dir for d in dep_packages), content_hash=digest,
                          tag=tag, dirty=dirty, git=state)
        self.done[key] = package
        self.order.append(package)
        return package


def load_graph(
    pkg_dirs: Sequence[Path],
    repo_root: Path | None = None,
    *,
    build_args: Mapping[str, str] | None = None,
    stat_cache_dir: Path | None = None,
    check_git: bool = True,
) -> PackageGraph:
    """The requested packages and their in-repo dependencies, tagged, in build order.

    ``build_args`` are command-line overrides applied to every package.
    """
    if not pkg_dirs:
        raise UsageError("no package directory given")
    root = (repo_root or find_repo_root(Path(pkg_dirs[0]))).resolve()
    resolver = _Resolver(root, build_args=build_args, stat_cache_dir=stat_cache_dir, check_git=check_git)
    requested: list[Path] = []
    for directory in pkg_dirs:
        package = resolver.visit(Path(directory), [], shown=os.path.normpath(str(directory)))
        if package.dir not in requested:
            requested.append(package.dir)
    return PackageGraph(
        packages=tuple(resolver.order), requested=tuple(requested), repo_root=root,
        skipped=tuple(resolver.skipped),
    )
