"""Package builds: ``pkgtool build pkg/<name>`` from build.yml to a signed multi-arch index.

The flow, one module per step:

* :mod:`~pkgtool.pkgbuild.plan` loads the package graph (:mod:`pkgtool.pkggraph`: specs,
  dependencies, content-hash tags) and asks the registry, and only the registry, what is
  missing.  A package whose index already lists every wanted arch is up to date; this path
  never connects to BuildKit and never imports grpc, so a no-op build is fast.
* :mod:`~pkgtool.pkgbuild.arch` runs one BuildKit solve per (package, arch), concurrently, and
  re-packs the result reproducibly into the local OCI layout cache
  (:mod:`pkgtool.oci.repack`): dockerd's ``moby`` exporter plus the Docker SDK's image
  save, or a standalone buildkitd's ``oci`` exporter.
* :mod:`~pkgtool.pkgbuild.push` pushes each arch as ``ORG/IMAGE:<tag>-<arch>`` and, only
  after every arch of the package succeeded, the index ``ORG/IMAGE:<tag>``, merged with
  arches another machine already pushed at that tag.
* :mod:`~pkgtool.pkgbuild.run` orders the work (dependencies first, independent packages in
  parallel), shows progress, and cancels every solve on the first failure or Ctrl-C.

Package images are re-packed with ``SOURCE_DATE_EPOCH`` = :data:`PACKAGE_EPOCH` (0): the
tag is a hash of the inputs, so the epoch must come from the inputs too, and a constant is
the one choice that cannot differ between two checkouts of the same content.
"""

from __future__ import annotations

# Every timestamp in a package image (file mtimes above it are clamped, config and history
# times are set to it).
PACKAGE_EPOCH = 0
# The build arg that carries the registry into `FROM ${PKGTOOL_REGISTRY}/org/image:tag@digest`.
# It is passed to every solve but is not part of the content hash: the digest pin fixes what
# is pulled, wherever it is pulled from.
REGISTRY_ARG = "PKGTOOL_REGISTRY"
