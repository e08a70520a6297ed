"""The facts a package's SLSA provenance records (:class:`~pkgtool.sign.provenance.BuildInfo`).

Shared by ``pkgtool build --sign`` (for what it built and pushed) and ``pkgtool manifest
--sign`` (for the index it merged from per-arch images that sharded jobs built and pushed):
both describe the same inputs (package path, source revision, content hash, context files,
build args, the base images by digest), only the platforms and the times differ.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pkgtool.pkgbuild.plan import display
from pkgtool.pkggraph import Package, PackageGraph

if TYPE_CHECKING:
    from pkgtool.sign.provenance import BuildInfo


def build_info(graph: PackageGraph, package: Package, *, arches: Sequence[str], build_args: Mapping[str, str],
               base_images: Mapping[str, str], started: datetime.datetime,
               finished: datetime.datetime, extra: Mapping[str, str] | None = None) -> BuildInfo:
    from pkgtool.hashing import context_files
    from pkgtool.oci.descriptor import sha256_digest
    from pkgtool.sign.provenance import BuildInfo, default_builder_id, default_invocation_id

    spec = package.spec
    git = package.git
    return BuildInfo(
        package=display(graph, package),
        source_repository=git.source_url if git else None,
        source_revision=git.revision if git else None,
        dirty=package.dirty,
        build_config_digest=sha256_digest((spec.dir / "build.yml").read_bytes()),
        content_hash=package.content_hash,
        platforms=tuple(f"linux/{a}" for a in arches),
        build_args=dict(build_args),
        base_images=dict(base_images),
        materials=context_files(spec, repo_root=graph.repo_root),
        builder_id=default_builder_id(os.environ),
        invocation_id=default_invocation_id(os.environ),
        started_on=started,
        finished_on=finished,
        extra=dict(extra or {}),
    )
