"""``pkgtool base lock|build|show-tag``: the Debian base image, from mirror to registry.

Flow of ``build`` (each arch concurrently; arm64 and s390x bootstrap under qemu-user):

1. Load ``pkg/base/base.yml`` and every ``versions.<arch>`` lock; the tag is a hash over both.
2. If the registry already has an index with that tag covering every arch: done (no-op).
3. If the work cache holds a verified bootstrap tar for (tag, arch), use it: it was checked
   against the same lock when it was made, so a mirror that moved on does not matter.
4. Otherwise resolve first (``mmdebstrap --simulate``, seconds) and compare with the lock, so
   a drifted mirror fails fast with "run `pkgtool base lock`" instead of after minutes of
   emulation; then bootstrap, and compare the *installed* set with the lock again.
5. Re-pack each tar into a one-layer OCI image and push the per-arch manifests and the
   multi-arch index (:mod:`pkgtool.rootfs_image`).

Why the tag hashes the locks: the recipe alone does not pin what the mirror serves.  With
the locks in the hash, a new package version means a new tag; the same tag always means
the same bytes (the bootstrap is bit-reproducible for fixed versions and epoch).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pkgtool.base import bootstrap as bs
from pkgtool.base.lockfile import LockMismatchError, check_lock, format_lock, load_lock
from pkgtool.base.recipe import BaseRecipe
from pkgtool.jsonio import hashed_json
from pkgtool.settings import work_cache_dir

# Bump when how the image is made from the tar changes: it is part of the tag.
BASE_FORMAT_VERSION = "2"
TAG_HEX = 40

Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def base_tag(recipe: BaseRecipe, locks: dict[str, dict[str, str]]) -> str:
    """Content hash over the recipe's parsed content, every lock and the format version."""
    material = {
        "format": BASE_FORMAT_VERSION,
        "recipe": recipe.raw,
        "locks": {arch: sorted(f"{n} {v}" for n, v in locks[arch].items()) for arch in sorted(locks)},
    }
    return hashlib.sha256(hashed_json(material)).hexdigest()[:TAG_HEX]


def load_locks(recipe: BaseRecipe) -> dict[str, dict[str, str]]:
    return {arch: load_lock(recipe.lock_path(arch)) for arch in recipe.arches}


def lock_header(recipe: BaseRecipe, arch: str) -> str:
    return (f"pkgtool base lock: {recipe.suite} {recipe.variant} {arch}. "
            "Do not edit by hand; run `pkgtool base lock`.")


def write_locks(recipe: BaseRecipe, *, arches: tuple[str, ...] | None = None, log: Log = _quiet) -> dict[str, Path]:
    """Resolve every arch against the mirror now and (re)write its lock file."""
    chosen = arches or recipe.arches
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        resolved = dict(zip(chosen, pool.map(lambda a: bs.resolve(recipe, a), chosen), strict=True))
    written: dict[str, Path] = {}
    for arch in chosen:
        path = recipe.lock_path(arch)
        text = format_lock(resolved[arch], header=lock_header(recipe, arch))
        old = path.read_text() if path.exists() else None
        if old != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        log(f"{path}: {len(resolved[arch])} packages{' (unchanged)' if old == text else ''}")
        written[arch] = path
    return written


@dataclass
class ArchResult:
    arch: str
    seconds: float
    cached: bool
    tar_bytes: int
    layer_bytes: int = 0


@dataclass
class BaseBuildResult:
    ref: str
    tag: str
    skipped: bool
    index_digest: str = ""
    arches: list[ArchResult] = field(default_factory=list)


def _cache_tar(tag: str, arch: str) -> Path:
    return work_cache_dir() / "base" / tag / f"{arch}.tar"


def _cached_tar_ok(tar: Path) -> bool:
    """A cached tar counts only if it still hashes to the digest recorded when it was made."""
    digest_file = tar.with_suffix(".tar.sha256")
    if not tar.is_file() or not digest_file.is_file():
        return False
    h = hashlib.sha256()
    with open(tar, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest() == digest_file.read_text().strip()


def bootstrap_arch(recipe: BaseRecipe, arch: str, *, lock: dict[str, str], tag: str,
                   use_cache: bool, log: Log = _quiet) -> tuple[Path, bool, float]:
    """A verified bootstrap tar for ``arch``: (path, came-from-cache, seconds)."""
    target = _cache_tar(tag, arch)
    if use_cache and _cached_tar_ok(target):
        log(f"{arch}: using cached bootstrap {target}")
        return target, True, 0.0
    lock_path = recipe.lock_path(arch)
    log(f"{arch}: resolving against the mirror")
    check_lock(lock, bs.resolve(recipe, arch), lock_path=lock_path, stage="resolve")
    log(f"{arch}: bootstrapping with mmdebstrap")
    result = bs.bootstrap(recipe, arch, target)
    try:
        check_lock(lock, result.versions, lock_path=lock_path, stage="installed packages")
    except LockMismatchError:
        target.unlink(missing_ok=True)  # it can never match this tag: do not keep 250 MB of it
        raise
    h = hashlib.sha256()
    with open(target, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    target.with_suffix(".tar.sha256").write_text(h.hexdigest() + "\n")
    log(f"{arch}: bootstrapped in {result.seconds:.0f}s")
    return target, False, result.seconds


def build_base(recipe: BaseRecipe, *, registry: str, force: bool = False, use_cache: bool = True,
               log: Log = _quiet) -> BaseBuildResult:
    from pkgtool import rootfs_image

    locks = load_locks(recipe)
    tag = base_tag(recipe, locks)
    ref = f"{registry}/{recipe.image}:{tag}"
    if not force and rootfs_image.index_complete(registry=registry, repository=recipe.image,
                                                 tag=tag, arches=recipe.arches):
        log(f"{ref}: already in the registry for {', '.join(recipe.arches)}")
        return BaseBuildResult(ref=ref, tag=tag, skipped=True,
                               index_digest=_index_digest(registry, recipe.image, tag))

    def one(arch: str) -> tuple[ArchResult, Path]:
        start = time.monotonic()
        tar, cached, _ = bootstrap_arch(recipe, arch, lock=locks[arch], tag=tag, use_cache=use_cache, log=log)
        return ArchResult(arch=arch, seconds=time.monotonic() - start, cached=cached,
                          tar_bytes=tar.stat().st_size), tar

    with ThreadPoolExecutor(max_workers=len(recipe.arches)) as pool:
        done = list(pool.map(one, recipe.arches))

    config = rootfs_image.ImageConfig(
        env=recipe.env, cmd=recipe.cmd, epoch=recipe.source_date_epoch,
        labels={"org.opencontainers.image.title": recipe.image,
                "dev.pkgtool.base.suite": recipe.suite,
                "dev.pkgtool.base.variant": recipe.variant,
                "dev.pkgtool.tag": tag},
    )
    with tempfile.TemporaryDirectory(prefix="pkgtool-base-") as tmp:
        images = []
        for result, tar in done:
            start = time.monotonic()
            image = rootfs_image.image_from_rootfs_tar(
                tar, arch=result.arch, config=config, workdir=Path(tmp) / result.arch,
                drop=rootfs_image.drop_device_nodes,
            )
            result.layer_bytes = image.layer.size
            result.seconds += time.monotonic() - start
            images.append(image)
        index = rootfs_image.push_images(images, registry=registry, repository=recipe.image, tag=tag)
    for result, _ in done:
        log(f"{result.arch}: {result.seconds:.0f}s, tar {result.tar_bytes / 1e6:.1f} MB, "
            f"layer {result.layer_bytes / 1e6:.1f} MB compressed{' (cached bootstrap)' if result.cached else ''}")
    return BaseBuildResult(ref=ref, tag=tag, skipped=False, index_digest=index.digest,
                           arches=[r for r, _ in done])


def _index_digest(registry: str, repository: str, tag: str) -> str:
    """The digest ``repository:tag`` resolves to now (for printing a pinnable reference)."""
    from pkgtool.oci.registry import RegistryClient

    with RegistryClient(registry) as client:
        found = client.head_manifest(repository, tag)
    return found.digest if found is not None else ""


def remove_cached_bootstraps(tag: str) -> None:
    shutil.rmtree(work_cache_dir() / "base" / tag, ignore_errors=True)
