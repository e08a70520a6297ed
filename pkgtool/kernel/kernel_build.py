"""``pkgtool kernel build|show-tag``: pinned Debian kernel .debs → LinuxKit kernel images.

Per arch (concurrently): fetch the .deb (``apt-get download``, sha256 verified before any
parsing, cached by that sha256), build the layout (:mod:`pkgtool.kernel.deb_layout`), pack it
as a one-layer OCI image and push; then push the multi-arch index.

Tag: ``<version>-<hash>``, ``hash`` = sha256 over the parsed kernel.yml (image, version,
epoch, per arch the package, its own version if it has one, the .deb's sha256, the
vmlinux flag and the kernel compression if any; the modules: globs if any) and
:data:`pkgtool.kernel.deb_layout.LAYOUT_VERSION`, first 16 hex digits.  The version prefix
lets an image YAML say which kernel it uses at a glance; the hash changes whenever any
input does.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pkgtool.jsonio import hashed_json
from pkgtool.kernel.deb_layout import LAYOUT_VERSION, build_kernel_layout
from pkgtool.kernel.fetch import fetch_deb
from pkgtool.kernel.kernel_yml import KernelArch, KernelSpec

TAG_HEX = 16
Log = Callable[[str], None]


def _quiet(_msg: str) -> None:
    return None


def _arch_material(entry: KernelArch) -> dict[str, object]:
    material: dict[str, object] = {"package": entry.package, "sha256": entry.sha256, "vmlinux": entry.vmlinux}
    if entry.own_version:  # only then: files without per-arch versions keep their tags
        material["version"] = entry.version
    if entry.compress:  # likewise: kernel.yml files without it keep their tags
        material["compress"] = entry.compress
    return material


def lock_hint(spec: KernelSpec) -> str:
    """The command that re-pins ``spec`` (named in stale-pin errors)."""
    return f"pkgtool kernel lock {spec.path.parent}"


def kernel_tag(spec: KernelSpec) -> str:
    material = {
        "layout": LAYOUT_VERSION,
        "image": spec.image,
        "version": spec.version,
        "source_date_epoch": spec.source_date_epoch,
        "arches": {a.arch: _arch_material(a) for a in spec.arches},
    }
    if spec.modules_exclude:
        material["modules_exclude"] = list(spec.modules_exclude)
    if spec.modules_include:
        material["modules_include"] = [glob.pattern for glob in spec.modules_include]
    return f"{spec.version}-{hashlib.sha256(hashed_json(material)).hexdigest()[:TAG_HEX]}"


@dataclass
class KernelArchResult:
    arch: str
    release: str
    seconds: float
    layer_bytes: int
    files: list[str] = field(default_factory=list)


@dataclass
class KernelBuildResult:
    ref: str
    tag: str
    skipped: bool
    index_digest: str = ""
    arches: list[KernelArchResult] = field(default_factory=list)


def build_kernel(spec: KernelSpec, *, registry: str, force: bool = False, log: Log = _quiet) -> KernelBuildResult:
    from pkgtool import rootfs_image

    tag = kernel_tag(spec)
    ref = f"{registry}/{spec.image}:{tag}"
    arches = tuple(a.arch for a in spec.arches)
    if not force and rootfs_image.index_complete(registry=registry, repository=spec.image, tag=tag, arches=arches):
        log(f"{ref}: already in the registry for {', '.join(arches)}")
        return KernelBuildResult(ref=ref, tag=tag, skipped=True)
    config = rootfs_image.ImageConfig(epoch=spec.source_date_epoch, labels={
        "org.opencontainers.image.title": spec.image,
        "org.opencontainers.image.version": spec.version,
        "dev.pkgtool.tag": tag,
    })

    with tempfile.TemporaryDirectory(prefix="pkgtool-kernel-") as tmp:
        def one(arch: str) -> tuple[KernelArchResult, rootfs_image.ArchImage]:
            start = time.monotonic()
            entry = spec.arch(arch)
            deb = fetch_deb(package=entry.package, arch=arch, version=entry.version, sha256=entry.sha256,
                            where=f"{entry.where}: arches.{arch}", lock_hint=lock_hint(spec))
            work = Path(tmp) / arch
            work.mkdir()
            layout = build_kernel_layout(deb, arch=arch, epoch=spec.source_date_epoch,
                                         vmlinux=entry.vmlinux, workdir=work, exclude=spec.modules_exclude,
                                         include=spec.modules_include, compress=entry.compress,
                                         kernel_name=f"{entry.package} ({arch})")
            flat = work / "layout.tar"
            rootfs_image.directory_tar(layout.root, flat, epoch=spec.source_date_epoch)
            image = rootfs_image.image_from_rootfs_tar(flat, arch=arch, config=config, workdir=work / "oci")
            seconds = time.monotonic() - start
            kept = f", {layout.modules} modules ({layout.dropped} left out)" if layout.dropped else ""
            log(f"{arch}: {layout.release}{kept}, layer {image.layer.size / 1e6:.1f} MB compressed, {seconds:.0f}s")
            return KernelArchResult(arch=arch, release=layout.release, seconds=seconds,
                                    layer_bytes=image.layer.size, files=layout.files), image

        with ThreadPoolExecutor(max_workers=len(arches)) as pool:
            done = list(pool.map(one, arches))
        index = rootfs_image.push_images([img for _, img in done], registry=registry,
                                         repository=spec.image, tag=tag)
    return KernelBuildResult(ref=ref, tag=tag, skipped=False, index_digest=index.digest,
                             arches=[r for r, _ in done])
