"""``kernel/<series>/kernel.yml``: which Debian kernel each architecture uses.

Example::

    image: pkgtool/kernel          # ORG/IMAGE in the registry
    version: 6.1.192-3             # Debian package version: the tag prefix, and every
                                   # arch's version unless the arch says otherwise
    source_date_epoch: 1700000000  # mtimes of every file in the image and in kernel.tar
    arches:
      amd64:
        package: linux-image-6.1.0-57-amd64
        sha256: 14d219...          # of the .deb; a download with other bytes is refused
        vmlinux: true              # also ship the ELF /vmlinux (fast PVH boots)
      s390x:
        package: linux-image-6.1.0-50-s390x
        version: 6.1.176-1         # this arch lags (bookworm-security builds no s390x)
        sha256: a9cbaa...
    modules:                       # optional: which modules /kernel.tar keeps (Debian .debs
                                   # only: a from-source kernel builds what its fragments ask for)
      include: [kernel/fs/overlayfs/overlay.ko, kernel/net/bridge/*]   # an allowlist
      exclude: [kernel/drivers/gpu/*, kernel/sound/*]                  # a denylist
    source:                        # optional: `pkgtool kernel build --from-source`
      image: pkgtool/kernel-source
      package: linux-source-6.1    # Debian's kernel source tarball (arch all)
      version: 6.1.192-3
      sha256: 5259c5...
      configs:                     # Kconfig fragments per arch, over allnoconfig, in order
        amd64: [config/common.config, config/amd64.config]

Per arch, ``compress: gzip`` ships an arm64 ``Image`` gzip-compressed (``Image.gz``, 33 ->
11 MB): QEMU's ``-kernel`` and GRUB (its gzio filter) boot it as they boot the plain one.
An x86 bzImage and an s390 image carry their own compressed payload, so the key is refused
for them.

``modules:`` globs are relative to ``lib/modules/<release>/`` and match whole module paths
(``*`` matches ``/`` too).  The kept set is: every module matching ``include`` (all of them
without ``include``) that matches no ``exclude`` glob, plus, always, every module those
depend on (``modules.dep``): exclusion never breaks a kept module.  Each ``include`` entry
must name something the kernel has on every arch, a loadable module or one built into the
kernel (``modules.builtin``: nothing to ship then), else the build fails with this file's
line.

``pkgtool kernel lock`` rewrites the package/version/sha256 values from the mirror.
Unknown keys are errors (a typo must not silently do nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pkgtool.arches import ARCHES
from pkgtool.errors import UsageError
from pkgtool.yamlload import YamlDoc, format_path, load_yaml, parse_yaml

_IMAGE_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~-]*$")
_SHA_RE = re.compile(r"^[a-f0-9]{64}$")
_CONFIG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
# Kernel file forms kernel.yml may ask for, and the kernel kinds that can take each.
KERNEL_COMPRESSIONS = {"gzip": ("arm64",)}


@dataclass(frozen=True)
class ModuleGlob:
    """One ``modules.include`` entry, with where it is written: whether it names anything is
    only known once the .deb is read, and that error must still point at kernel.yml."""

    pattern: str
    where: str  # "kernel.yml:LINE: modules.include[N]"


@dataclass(frozen=True)
class KernelArch:
    arch: str
    package: str
    sha256: str
    vmlinux: bool = False
    compress: str = ""  # "" (as Debian ships it) or a KERNEL_COMPRESSIONS key
    version: str = ""  # resolved: the arch's own version, else the file's
    own_version: bool = False  # True if the arch sets ``version`` itself
    where: str = ""  # file:line of the arch's entry, for errors


@dataclass(frozen=True)
class KernelSource:
    """How to build the same layout from Debian's ``linux-source-*`` package."""

    image: str
    package: str
    version: str
    sha256: str
    configs: dict[str, tuple[Path, ...]]  # arch -> fragment files (absolute), in order
    where: str = ""

    @property
    def arches(self) -> tuple[str, ...]:
        return tuple(a for a in ARCHES if a in self.configs)


@dataclass(frozen=True)
class KernelSpec:
    path: Path
    image: str
    version: str
    source_date_epoch: int
    arches: tuple[KernelArch, ...]
    source: KernelSource | None = None
    modules_exclude: tuple[str, ...] = ()  # globs, relative to lib/modules/<release>/
    modules_include: tuple[ModuleGlob, ...] = ()  # an allowlist; empty: every module

    def arch(self, name: str) -> KernelArch:
        for entry in self.arches:
            if entry.arch == name:
                return entry
        raise UsageError(f"{self.path}: no kernel for architecture {name!r}")


def _check_keys(doc: YamlDoc, data: dict[str, object], path: tuple[str | int, ...], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise doc.error((*path, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _string(doc: YamlDoc, data: dict[str, object], path: tuple[str | int, ...], key: str, pattern: re.Pattern[str]) -> str:
    value = data.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise doc.error((*path, key), "must be a string: YAML read this value as a number, so quote it")
    if not isinstance(value, str) or not pattern.match(value):
        raise doc.error((*path, key), f"required, must match {pattern.pattern}")
    return value


def load_kernel_spec(path: Path) -> KernelSpec:
    return kernel_spec_from_doc(load_yaml(path), path)


def parse_kernel_spec(text: str, path: Path) -> KernelSpec:
    """The spec in ``text`` as if it were the file ``path`` (used to check a rewrite)."""
    return kernel_spec_from_doc(parse_yaml(text, str(path)), path)


def kernel_spec_from_doc(doc: YamlDoc, path: Path) -> KernelSpec:
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping")
    _check_keys(doc, data, (), {"image", "version", "source_date_epoch", "arches", "source", "modules"})
    image = _string(doc, data, (), "image", _IMAGE_RE)
    version = _string(doc, data, (), "version", _VERSION_RE)
    epoch = data.get("source_date_epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise doc.error(("source_date_epoch",), "required, a non-negative integer (seconds)")
    arches_data = data.get("arches")
    if not isinstance(arches_data, dict) or not arches_data:
        raise doc.error(("arches",), "required, a mapping of architecture to package")
    arches: list[KernelArch] = []
    for arch, entry in arches_data.items():
        where: tuple[str | int, ...] = ("arches", arch)
        if arch not in ARCHES:
            raise doc.error(where, f"unsupported architecture (supported: {', '.join(ARCHES)})")
        if not isinstance(entry, dict):
            raise doc.error(where, "expected a mapping with package and sha256")
        _check_keys(doc, entry, where, {"package", "version", "sha256", "vmlinux", "compress"})
        vmlinux = entry.get("vmlinux", False)
        if not isinstance(vmlinux, bool):
            raise doc.error((*where, "vmlinux"), "must be true or false")
        if vmlinux and arch != "amd64":
            raise doc.error((*where, "vmlinux"), "only amd64 bzImages carry an extractable vmlinux")
        compress = _compress(doc, entry.get("compress"), arch, (*where, "compress"))
        own = "version" in entry
        arches.append(KernelArch(
            arch=arch,
            package=_string(doc, entry, where, "package", _PACKAGE_RE),
            sha256=_string(doc, entry, where, "sha256", _SHA_RE),
            vmlinux=vmlinux,
            compress=compress,
            version=_string(doc, entry, where, "version", _VERSION_RE) if own else version,
            own_version=own,
            where=doc.where(where),
        ))
    arches.sort(key=lambda a: ARCHES.index(a.arch))
    source = _source(doc, data.get("source"), path, image) if "source" in data else None
    exclude, include = _modules(doc, data.get("modules"))
    return KernelSpec(path=path, image=image, version=version, source_date_epoch=epoch,
                      arches=tuple(arches), source=source, modules_exclude=exclude, modules_include=include)


def _compress(doc: YamlDoc, value: object, arch: str, where: tuple[str | int, ...]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or value not in KERNEL_COMPRESSIONS:
        raise doc.error(where, f"expected one of: {', '.join(KERNEL_COMPRESSIONS)}")
    if arch not in KERNEL_COMPRESSIONS[value]:
        raise doc.error(where, f"only for {', '.join(KERNEL_COMPRESSIONS[value])}: a bzImage and an s390 image "
                        "already carry a compressed kernel that they unpack themselves")
    return value


def _globs(doc: YamlDoc, data: dict[str, object], key: str) -> list[tuple[str, tuple[str | int, ...]]]:
    """``modules.<key>`` as (glob, YAML path) pairs, each checked to stay below lib/modules/<release>/."""
    where: tuple[str | int, ...] = ("modules", key)
    patterns = data.get(key) or []
    if not isinstance(patterns, list):
        raise doc.error(where, "expected a list of globs")
    out = []
    for i, pattern in enumerate(patterns):
        if not isinstance(pattern, str) or not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
            raise doc.error((*where, i), "expected a glob relative to lib/modules/<release>/, e.g. kernel/sound/*")
        out.append((pattern, (*where, i)))
    return out


def _modules(doc: YamlDoc, data: object) -> tuple[tuple[str, ...], tuple[ModuleGlob, ...]]:
    if data is None:
        return (), ()
    if not isinstance(data, dict):
        raise doc.error(("modules",), "expected a mapping with include and/or exclude")
    _check_keys(doc, data, ("modules",), {"include", "exclude"})
    exclude = tuple(pattern for pattern, _ in _globs(doc, data, "exclude"))
    include = tuple(ModuleGlob(pattern, f"{doc.where(at)}: {format_path(at)}") for pattern, at in _globs(doc, data, "include"))
    if "include" in data and not include:
        # An empty allowlist would ship no module at all: surely not what was meant.
        raise doc.error(("modules", "include"), "an empty list would keep no module; delete the key to keep them all")
    return exclude, include


def _source(doc: YamlDoc, data: object, path: Path, image: str) -> KernelSource:
    where: tuple[str | int, ...] = ("source",)
    if not isinstance(data, dict):
        raise doc.error(where, "expected a mapping with image, package, version, sha256 and configs")
    _check_keys(doc, data, where, {"image", "package", "version", "sha256", "configs"})
    source_image = _string(doc, data, where, "image", _IMAGE_RE)
    if source_image == image:
        # Same repository, same version prefix: `pkgtool update-hashes` could not tell
        # a from-source tag from a .deb one.
        raise doc.error((*where, "image"), f"must differ from the .deb image {image!r} (e.g. {image}-source)")
    configs_data = data.get("configs")
    if not isinstance(configs_data, dict) or not configs_data:
        raise doc.error((*where, "configs"), "required, a mapping of architecture to a list of Kconfig fragments")
    configs: dict[str, tuple[Path, ...]] = {}
    for arch, files in configs_data.items():
        at: tuple[str | int, ...] = (*where, "configs", arch)
        if arch not in ARCHES:
            raise doc.error(at, f"unsupported architecture (supported: {', '.join(ARCHES)})")
        if not isinstance(files, list) or not files:
            raise doc.error(at, "expected a list of Kconfig fragment files, relative to kernel.yml")
        found: list[Path] = []
        for i, name in enumerate(files):
            if not isinstance(name, str) or not _CONFIG_RE.match(name) or ".." in name.split("/"):
                raise doc.error((*at, i), "expected a relative path below the kernel.yml directory")
            fragment = path.parent / name
            if not fragment.is_file():
                raise doc.error((*at, i), f"{fragment}: no such file")
            found.append(fragment)
        configs[arch] = tuple(found)
    return KernelSource(
        image=source_image,
        package=_string(doc, data, where, "package", _PACKAGE_RE),
        version=_string(doc, data, where, "version", _VERSION_RE),
        sha256=_string(doc, data, where, "sha256", _SHA_RE),
        configs={a: configs[a] for a in ARCHES if a in configs},
        where=doc.where(where),
    )
