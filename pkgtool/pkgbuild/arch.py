"""One package for one arch: a BuildKit solve, then a reproducible re-pack into the cache.

dockerd 20.10's BuildKit can only export an image into dockerd's own store (``moby``), one
platform per solve, so there the result is exported under a throw-away name, streamed out
with the Docker SDK's ``save`` (a docker-archive tar), re-packed, and the name removed.  A
standalone buildkitd exports an OCI layout tar straight to us through the session.
Either way the bytes pass through :func:`pkgtool.oci.repack.repack_archive`, which gives
the same manifest digest for the same file systems whatever builder made them, and whatever
build cache (:mod:`~pkgtool.pkgbuild.cache`) the steps came from.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkgtool.buildkit import Builder, CacheEntry, MobyExport, OCIExport
from pkgtool.buildkit.status import StatusCallback
from pkgtool.errors import PkgtoolError
from pkgtool.oci.descriptor import Platform
from pkgtool.oci.layout import Layout
from pkgtool.oci.repack import RepackedImage, repack_archive
from pkgtool.pkgbuild import PACKAGE_EPOCH
from pkgtool.pkgbuild.inline_cache import push_inline_cache
from pkgtool.pkggraph import Package

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient

_DOCKER_TIMEOUT = 600


@dataclass(frozen=True)
class InlineCacheTarget:
    """dockerd: push the image it exported (with its inline cache records) here."""

    client: RegistryClient
    repository: str
    tag: str


@dataclass(frozen=True)
class ArchCache:
    """The build cache for one solve: registry imports, exports, and (dockerd) where the
    inline cache image goes."""

    imports: Sequence[CacheEntry] = ()
    exports: Sequence[CacheEntry] = ()
    inline_target: InlineCacheTarget | None = None


@dataclass(frozen=True)
class ArchBuild:
    arch: str
    image: RepackedImage
    seconds: float
    bytes_sent: int  # context bytes BuildKit asked for (0: it reused its last transfer)
    builder: str = ""  # the builder that ran the solve (its progress label)
    cache_image: str = ""  # the cache image pushed for --cache-to on dockerd


def _network(package: Package) -> str | None:
    # build.yml `network: false` (the default) forbids network access in RUN steps.
    return None if package.spec.network else "none"


def build_arch(
    builder: Builder,
    package: Package,
    arch: str,
    *,
    layout: Layout,
    context: Path,
    build_args: Mapping[str, str],
    labels: Mapping[str, str],
    on_status: StatusCallback | None = None,
    cancel: threading.Event | None = None,
    cache: ArchCache | None = None,
    builder_label: str = "",
) -> ArchBuild:
    """Build ``package`` for ``arch`` and store the re-packed image in ``layout``.

    ``context`` is the staged build context (:func:`pkgtool.pkgbuild.context.build_context`).
    """
    spec = package.spec
    platform = f"linux/{arch}"
    start = time.monotonic()
    solve: dict[str, Any] = {
        "context": context,
        "dockerfile": spec.dockerfile_path,
        "platform": platform,
        "build_args": build_args,
        "network": _network(package),
        "no_cache": spec.disable_cache,
        "on_status": on_status,
        "cancel": cancel,
        "cache_imports": cache.imports if cache else (),
        "cache_exports": cache.exports if cache else (),
    }
    repack: dict[str, Any] = {
        "source_date_epoch": PACKAGE_EPOCH,
        "labels": labels,
        "platform": Platform("linux", arch),
    }
    cache_image = ""
    if builder.address.kind == "dockerd":
        inline = cache.inline_target if cache else None
        image, sent, cache_image = _via_dockerd(builder, solve, repack, layout, inline)
    else:
        with tempfile.TemporaryDirectory(prefix="pkgtool-oci-") as tmp:
            dest = Path(tmp) / "image.tar"
            result = builder.solve_dockerfile(export=OCIExport(dest), **solve)
            image, sent = repack_archive(dest, layout, **repack), result.bytes_sent
    return ArchBuild(arch=arch, image=image, seconds=time.monotonic() - start, bytes_sent=sent,
                     builder=builder_label, cache_image=cache_image)


def _via_dockerd(builder: Builder, solve: dict[str, Any], repack: dict[str, Any], layout: Layout,
                 inline: InlineCacheTarget | None) -> tuple[RepackedImage, int, str]:
    import docker.errors

    from pkgtool.buildkit.connect import docker_client

    # A unique name: concurrent builds of the same package (other processes, other arches)
    # must never save each other's result.
    name = f"pkgtool-build/{secrets.token_hex(8)}:latest"
    result = builder.solve_dockerfile(export=MobyExport(name), **solve)
    try:
        client = docker_client(builder.address, timeout=_DOCKER_TIMEOUT)
    except docker.errors.DockerException as exc:
        raise PkgtoolError(f"cannot reach {builder.address} to read the built image back: {exc}") from None
    cache_image = ""
    try:
        try:
            chunks = client.images.get(name).save(named=True)
            if inline is None:
                image = repack_archive(chunks, layout, image=name, **repack)
            else:
                # The same saved image feeds the cache push (as dockerd made it) and the re-pack.
                with tempfile.TemporaryDirectory(prefix="pkgtool-save-") as tmp:
                    saved = Path(tmp) / "image.tar"
                    with open(saved, "wb") as out:
                        for chunk in chunks:
                            out.write(chunk)
                    pushed = push_inline_cache(saved, inline.client, repository=inline.repository, tag=inline.tag)
                    cache_image = pushed.ref
                    image = repack_archive(saved, layout, image=name, **repack)
        except docker.errors.DockerException as exc:
            raise PkgtoolError(f"cannot read the built image back from dockerd: {exc}") from None
        finally:
            # BuildKit keeps its own cache; the image-store copy is only a hand-off.
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(name, force=True)
    finally:
        client.close()
    return image, result.bytes_sent, cache_image
