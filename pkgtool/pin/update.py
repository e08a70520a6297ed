"""``pkgtool update-hashes``: re-pin every in-repo reference to current tags and digests.

Packages are visited dependencies first.  A reference to an in-repo image whose tag is no
longer current is rewritten to ``<current tag>@<digest>``, the digest read from the
registry, where the image is built first if it is missing (the Debian base with
``pkgtool base build``, a kernel with ``pkgtool kernel build``, a package with
``pkgtool build``).  Rewriting a Dockerfile changes that package's own tag, so after each
rewritten package the tags are recomputed before its dependents are visited.  Image YAMLs
are re-pinned last.  References that are already current are not touched (and cost no
registry request), so a second run changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pkgtool.errors import PkgtoolError
from pkgtool.gitstate import DIRTY_SUFFIX
from pkgtool.pin.producers import Producer, Producers, load_producers
from pkgtool.pin.refs import Ref, dockerfile_refs, image_yaml_files, rewrite, yaml_refs

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.progress import Progress

Log = Callable[[str], None]


@dataclass(frozen=True)
class Change:
    ref: Ref
    new: str

    def format(self, root: Path) -> str:
        return f"{self.ref.where(root)}: {self.ref.text} -> {self.new}"


class Updater:
    def __init__(self, root: Path, *, registry: str, client: RegistryClient, build: bool,
                 progress: Progress, log: Log) -> None:
        self.root = root
        self.registry = registry
        self.client = client
        self.build = build
        self.progress = progress
        self.log = log

    def _lookup(self, producer: Producer) -> str | None:
        # A package built from an uncommitted tree is pushed under its -dirty tag; its image
        # is the one the clean tag will name (nothing from git is in it).
        tags = [producer.tag] + ([producer.tag + DIRTY_SUFFIX] if producer.kind == "package" else [])
        for tag in tags:
            found = self.client.head_manifest(producer.repository, tag)
            if found is not None:
                return found.digest
        return None

    def digest(self, producer: Producer) -> str:
        """The registry digest of the producer's current tag, building it if missing."""
        found = self._lookup(producer)
        if found is None:
            where = producer.path.relative_to(self.root).as_posix()
            if not self.build:
                raise PkgtoolError(f"{producer.repository}:{producer.tag} ({where}) is not in registry "
                                   f"{self.registry}; build it first or drop --no-build")
            self.log(f"{where}: {producer.repository}:{producer.tag} is not in the registry; building it")
            self._build(producer)
            found = self._lookup(producer)
            if found is None:
                raise PkgtoolError(f"{producer.repository}:{producer.tag} is still not in the registry after building it")
        return found

    def _build(self, producer: Producer) -> None:
        if producer.kind == "base":
            from pkgtool.base.base_build import build_base
            from pkgtool.base.recipe import load_recipe

            build_base(load_recipe(producer.path), registry=self.registry, log=self.log)
        elif producer.kind == "kernel-source":
            # Compiling takes minutes per arch: never as a side effect of re-pinning.
            where = producer.path.relative_to(self.root).as_posix()
            raise PkgtoolError(f"{producer.repository}:{producer.tag} is not in registry {self.registry}; "
                               f"compile it first: pkgtool kernel build --from-source {where}")
        elif producer.kind == "kernel":
            from pkgtool.kernel.kernel_build import build_kernel
            from pkgtool.kernel.kernel_yml import load_kernel_spec

            build_kernel(load_kernel_spec(producer.path), registry=self.registry, log=self.log)
        else:
            from pkgtool.pkgbuild.api import execute, make_plan
            from pkgtool.pkgbuild.plan import BuildOptions, cpu_jobs
            from pkgtool.settings import cache_dir

            options = BuildOptions(registry=self.registry, jobs=cpu_jobs(), allow_dirty=True)
            execute(make_plan([producer.path], options, cache_dir=cache_dir()), progress=self.progress)

    def stale(self, refs: list[Ref], producers: Producers, *, owner: str | None = None) -> list[Change]:
        changes = []
        for ref in refs:
            if ref.repository == owner or not producers.produces(ref.repository):
                continue
            producer = producers.find(ref.repository, ref.tag) or producers.by_repository[ref.repository][0]
            if ref.tag == producer.tag and ref.digest is not None:
                continue
            changes.append(Change(ref, ref.with_pin(producer.tag, self.digest(producer))))
        return changes

    def run(self) -> list[Change]:
        done: list[Change] = []
        while True:
            producers = load_producers(self.root)
            for producer in producers.packages():
                assert producer.dockerfile is not None
                changes = self.stale(dockerfile_refs(producer.dockerfile), producers, owner=producer.repository)
                if changes:
                    self._apply(producer.dockerfile, changes, done)
                    break  # this package's tag changed: recompute before its dependents
            else:
                break
        producers = load_producers(self.root)
        for path in image_yaml_files(self.root):
            changes = self.stale(yaml_refs(path), producers)
            if changes:
                self._apply(path, changes, done)
        return done

    def _apply(self, path: Path, changes: list[Change], done: list[Change]) -> None:
        rewrite(path, [(c.ref, c.new) for c in changes])
        for change in changes:
            self.log(change.format(self.root))
        done.extend(changes)


def update_hashes(root: Path, *, registry: str, build: bool, progress: Progress, log: Log) -> list[Change]:
    from pkgtool.oci.registry import RegistryClient

    with RegistryClient(registry) as client:
        return Updater(root, registry=registry, client=client, build=build, progress=progress, log=log).run()
