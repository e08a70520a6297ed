"""``kernel/<series>/kernel.yml``: which Debian kernel package each architecture uses.

Example::

    image: pkgtool/kernel          # ORG/IMAGE in the registry
    version: 6.1.176-1             # Debian package version, shared by all arches; tag prefix
    source_date_epoch: 1700000000  # mtimes of every file in the image and in kernel.tar
    arches:
      amd64:
        package: linux-image-6.1.0-50-amd64
        sha256: 7b5597...           # of the .deb; a download with other bytes is refused
        vmlinux: true               # also ship the ELF /vmlinux (fast PVH boots)
      arm64: {package: linux-image-6.1.0-50-arm64, sha256: ...}

Unknown keys are errors (a typo must not silently do nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pkgtool.errors import UsageError
from pkgtool.yamlload import YamlDoc, load_yaml

SUPPORTED_ARCHES = ("amd64", "arm64", "s390x")
_IMAGE_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)+$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION_RE = re.compile(r"^[0-9][A-Za-z0-9.+~-]*$")
_SHA_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass(frozen=True)
class KernelArch:
    arch: str
    package: str
    sha256: str
    vmlinux: bool = False


@dataclass(frozen=True)
class KernelSpec:
    path: Path
    image: str
    version: str
    source_date_epoch: int
    arches: tuple[KernelArch, ...]

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
    if not isinstance(value, str) or not pattern.match(value):
        raise doc.error((*path, key), f"required, must match {pattern.pattern}")
    return value


def load_kernel_spec(path: Path) -> KernelSpec:
    doc = load_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "expected a mapping")
    _check_keys(doc, data, (), {"image", "version", "source_date_epoch", "arches"})
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
        if arch not in SUPPORTED_ARCHES:
            raise doc.error(where, f"unsupported architecture (supported: {', '.join(SUPPORTED_ARCHES)})")
        if not isinstance(entry, dict):
            raise doc.error(where, "expected a mapping with package and sha256")
        _check_keys(doc, entry, where, {"package", "sha256", "vmlinux"})
        vmlinux = entry.get("vmlinux", False)
        if not isinstance(vmlinux, bool):
            raise doc.error((*where, "vmlinux"), "must be true or false")
        if vmlinux and arch != "amd64":
            raise doc.error((*where, "vmlinux"), "only amd64 bzImages carry an extractable vmlinux")
        arches.append(KernelArch(
            arch=arch,
            package=_string(doc, entry, where, "package", _PACKAGE_RE),
            sha256=_string(doc, entry, where, "sha256", _SHA_RE),
            vmlinux=vmlinux,
        ))
    arches.sort(key=lambda a: SUPPORTED_ARCHES.index(a.arch))
    return KernelSpec(path=path, image=image, version=version, source_date_epoch=epoch, arches=tuple(arches))
