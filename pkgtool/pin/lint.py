"""``pkgtool lint``: every image reference is pinned by digest and, when the repository
builds that image, names its current tag.

Offline by default (tags come from the files); ``--check-registry`` also asks the registry
that each pinned in-repo reference's tag still resolves to the pinned digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pkgtool.pin.producers import Producers, load_producers
from pkgtool.pin.refs import Ref, dockerfile_refs, image_yaml_files, yaml_refs

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient


@dataclass(frozen=True)
class Finding:
    ref: Ref
    message: str

    def format(self, root: Path) -> str:
        return f"{self.ref.where(root)}: {self.message}"


def repository_refs(producers: Producers, *, yaml_dirs: tuple[str, ...] = ("examples",)) -> list[Ref]:
    """Every reference in the package Dockerfiles and the image YAMLs of the repository."""
    refs: list[Ref] = []
    for producer in producers.packages():
        assert producer.dockerfile is not None
        refs += [r for r in dockerfile_refs(producer.dockerfile) if r.repository != producer.repository]
    for path in image_yaml_files(producers.root, yaml_dirs):
        refs += yaml_refs(path)
    return refs


def check_ref(ref: Ref, producers: Producers) -> str | None:
    """What is wrong with one reference, or None."""
    if ref.digest is None:
        return f"{ref.text} is not pinned by digest (run `pkgtool update-hashes`, or `pkgtool image lock` for images built elsewhere)"
    if not producers.produces(ref.repository):
        return None  # built elsewhere: a digest pin is all we can ask for
    producer = producers.find(ref.repository, ref.tag)
    if producer is None:
        current = ", ".join(p.tag for p in producers.by_repository[ref.repository])
        return f"{ref.text}: no {ref.repository} in this repository has tag {ref.tag} (current: {current}); run `pkgtool update-hashes`"
    if ref.tag is None:
        return f"{ref.text} names no tag; the current one is {producer.tag}"
    if ref.tag != producer.tag:
        where = producer.path.relative_to(producers.root).as_posix()
        return f"{ref.text} is stale: {where} is now {ref.repository}:{producer.tag}; run `pkgtool update-hashes`"
    return None


def lint(root: Path, *, client: RegistryClient | None = None,
         on_skip: Callable[[Path, str], None] | None = None) -> list[Finding]:
    producers = load_producers(root, on_skip=on_skip)
    findings = []
    for ref in repository_refs(producers):
        problem = check_ref(ref, producers)
        if problem is None and client is not None and ref.tag and ref.digest:
            found = client.head_manifest(ref.repository, ref.tag)
            if found is None:
                problem = f"{ref.repository}:{ref.tag} is not in registry {client.registry}"
            elif found.digest != ref.digest:
                problem = f"{ref.repository}:{ref.tag} is {found.digest} in registry {client.registry}, not the pinned {ref.digest}"
        if problem is not None:
            findings.append(Finding(ref, problem))
    return findings
