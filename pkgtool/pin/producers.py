"""The images a repository produces, with the tag each would have now.

A producer is found by the repository name a reference uses (``pkgtool/base``).  Several
kernel.yml files may share one image name; their tags start with their version
(``6.1.176-1-<hash>``), which is how a reference picks one.  A kernel.yml with a ``source:``
section also produces its from-source image (``source.image``), tagged the same way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pkgtool.errors import PkgtoolError
from pkgtool.spec.package import BUILD_YML, find_packages

BASE_YML = "base.yml"
KERNEL_YML = "kernel.yml"
KERNEL_KINDS = ("kernel", "kernel-source")


@dataclass(frozen=True)
class Producer:
    kind: str  # "package", "base", "kernel" or "kernel-source"
    path: Path  # the package directory, or the base.yml / kernel.yml file
    repository: str  # ORG/IMAGE
    tag: str
    version: str = ""  # kernels: the tag's version prefix
    dockerfile: Path | None = None  # packages: the Dockerfile whose references get pinned

    def matches(self, tag: str | None) -> bool:
        """Could a reference with ``tag`` mean this producer (of several with one name)?"""
        if self.kind not in KERNEL_KINDS or tag is None:
            return True
        return tag.startswith(f"{self.version}-")


@dataclass
class Producers:
    root: Path
    by_repository: dict[str, list[Producer]]

    def produces(self, repository: str) -> bool:
        return repository in self.by_repository

    def find(self, repository: str, tag: str | None) -> Producer | None:
        """The producer a reference means; None if none (or, for kernels, no version) fits."""
        candidates = [p for p in self.by_repository.get(repository, []) if p.matches(tag)]
        return candidates[0] if candidates else None

    def packages(self) -> list[Producer]:
        """Package producers, dependencies before dependents."""
        return [p for group in self.by_repository.values() for p in group if p.kind == "package"]


def _files(root: Path, name: str) -> list[Path]:
    found = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if name in files:
            found.append(Path(current) / name)
    return sorted(found)


def package_dirs(root: Path) -> list[Path]:
    return [d for d in find_packages(root) if (d / BUILD_YML).is_file()]


def load_producers(root: Path, *, on_skip: Callable[[Path, str], None] | None = None) -> Producers:
    """Every producer below ``root``, tags computed from the files as they are now."""
    from pkgtool.base.base_build import base_tag, load_locks
    from pkgtool.base.recipe import load_recipe
    from pkgtool.kernel.kernel_build import kernel_tag
    from pkgtool.kernel.kernel_yml import load_kernel_spec
    from pkgtool.kernel.source import source_tag
    from pkgtool.pkggraph import load_graph
    from pkgtool.settings import work_cache_dir

    out: dict[str, list[Producer]] = {}

    def add(producer: Producer) -> None:
        out.setdefault(producer.repository, []).append(producer)

    for path in _files(root, BASE_YML):
        recipe = load_recipe(path)
        add(Producer("base", path, recipe.image, base_tag(recipe, load_locks(recipe))))
    for path in _files(root, KERNEL_YML):
        spec = load_kernel_spec(path)
        add(Producer("kernel", path, spec.image, kernel_tag(spec), version=spec.version))
        if spec.source is not None:
            add(Producer("kernel-source", path, spec.source.image, source_tag(spec), version=spec.source.version))
    dirs = package_dirs(root)
    if dirs:
        graph = load_graph(dirs, repo_root=root, stat_cache_dir=work_cache_dir() / "contenthash")
        for directory, reason in graph.skipped:
            if on_skip is not None:
                on_skip(directory, reason)
        for package in graph.packages:
            # The clean tag: a pin written before the commit must still hold after it.
            add(Producer("package", package.dir, package.spec.name, package.clean_tag,
                         dockerfile=package.spec.dockerfile_path))
    for repository, group in out.items():
        kinds = {p.kind for p in group}
        if len(group) > 1 and not (len(kinds) == 1 and kinds <= set(KERNEL_KINDS)):
            places = ", ".join(str(p.path.relative_to(root)) for p in group)
            raise PkgtoolError(f"image {repository!r} is produced by several files: {places}")
    return Producers(root=root, by_repository=out)
