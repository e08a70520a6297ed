"""``pkgtool manifest``: write each package's index from the per-arch images in the registry.

The last step of sharded publishing: jobs on different machines each build and push
``ORG/IMAGE:<tag>-<arch>`` (``pkgtool build --no-index``); then one job merges the index
``ORG/IMAGE:<tag>`` through the merge-safe path of :mod:`~pkgtool.pkgbuild.push` and, with
``--sign``, signs it and attaches provenance for all its platforms.

``--complete`` refuses to write any index while any package lacks one of its arches (its
build.yml ``arches``, narrowed by ``--platforms``): every package is checked before the
first index is written, so a missing shard leaves nothing half-published.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pkgtool.errors import PkgtoolError
from pkgtool.oci.descriptor import Descriptor
from pkgtool.pkgbuild import REGISTRY_ARG
from pkgtool.pkgbuild.plan import BuildOptions, display, wanted_arches
from pkgtool.pkggraph import Package, PackageGraph

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.progress import Progress
    from pkgtool.sign.signer import Signer


@dataclass(frozen=True)
class Merged:
    package: Package
    index: Descriptor
    arches: tuple[str, ...]
    changed: bool  # False: the registry already had exactly this index


def merge_indexes(graph: PackageGraph, packages: Sequence[Package], client: RegistryClient, *,
                  platforms: tuple[str, ...] | None, complete: bool) -> list[Merged]:
    """Merge the index of each package from its ``<tag>-<arch>`` manifests."""
    from pkgtool.pkgbuild.push import arch_tags, push_index

    plans: list[tuple[Package, tuple[str, ...], dict[str, Descriptor]]] = []
    for package in packages:
        arches = wanted_arches(package, platforms)
        if not arches:
            continue
        found = arch_tags(client, repository=package.spec.name, tag=package.tag, arches=arches)
        missing = [a for a in arches if a not in found]
        if not found or (complete and missing):
            what = ", ".join(f"{package.tag}-{a}" for a in (missing or arches))
            raise PkgtoolError(
                f"{display(graph, package)}: {client.registry}/{package.spec.name} lacks {what}; "
                + ("no index was written (--complete)" if complete else "build the package first")
            )
        plans.append((package, arches, found))
    merged: list[Merged] = []
    for package, arches, found in plans:
        before = client.head_manifest(package.spec.name, package.tag)
        index = push_index(client, repository=package.spec.name, tag=package.tag, ours=found,
                           arches=package.spec.arches)
        merged.append(Merged(package, index, tuple(a for a in arches if a in found),
                             changed=before is None or before.digest != index.digest))
    return merged


def sign_merged(graph: PackageGraph, merged: Merged, client: RegistryClient, *, options: BuildOptions,
                signer: Signer, progress: Progress) -> int:
    """Sign a merged index and its manifests, with SLSA provenance for all its platforms;
    returns how many items were attached."""
    from pkgtool.pkgbuild.build_facts import build_info
    from pkgtool.pkgbuild.run import resolve_base_images, solve_build_args
    from pkgtool.sign.publish import sign_package

    started = datetime.datetime.now(datetime.UTC)
    package = merged.package
    args = solve_build_args(package, options)
    recorded_args = {k: v for k, v in args.items() if k != REGISTRY_ARG}
    base_images = resolve_base_images(package, args, client)
    index = client.get_manifest(package.spec.name, merged.index.digest)
    manifests = {c.platform.architecture: c for c in index.manifests if c.platform is not None}
    info = build_info(graph, package, arches=merged.arches, build_args=recorded_args, base_images=base_images,
                      started=started, finished=datetime.datetime.now(datetime.UTC))
    report = sign_package(client, repository=package.spec.name, index=merged.index, manifests=manifests,
                          build=info, signer=signer)
    progress.message(f"signed {client.registry}/{package.ref}@{merged.index.digest}: {report.added} item(s) "
                     f"attached by {report.signer}", group=display(graph, package))
    return report.added
