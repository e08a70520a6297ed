"""How the initramfs is compressed: zstd when the kernel can unpack it, else gzip.

Why zstd by default: under emulation (QEMU TCG) the kernel's own decompression of the
initramfs is a visible part of every boot, and zstd at the layers' fixed level unpacks in
well under the time gzip takes, while compressing better.  A kernel unpacks only the
formats it was built for (``CONFIG_RD_GZIP``, ``CONFIG_RD_ZSTD``, ...); a LinuxKit kernel
image carries its build configuration as ``/config``, so the choice is read from there:

* ``auto`` (the default): zstd if the config says ``CONFIG_RD_ZSTD=y``, else gzip, which
  every kernel with initramfs support has (also when the image has no ``/config``);
* ``zstd``: refused, before any output is written, when the config shows the kernel
  cannot unpack it (a kernel image without ``/config`` is taken at the user's word);
* ``gzip``: always.
"""

from __future__ import annotations

import gzip
import re

from pkgtool.errors import UsageError

CHOICES = ("auto", "gzip", "zstd")
_OPTION = {"gzip": "CONFIG_RD_GZIP", "zstd": "CONFIG_RD_ZSTD"}
_CONFIG_LIMIT = 16 * 1024 * 1024  # a kernel .config is a few hundred KB


def check_choice(requested: str) -> None:
    if requested not in CHOICES:
        raise UsageError(f"unknown initrd compression {requested!r} (one of: {', '.join(CHOICES)})")


def config_enables(config: bytes, option: str) -> bool:
    """Whether a kernel .config (plain, or gzip'd like /proc/config.gz) sets ``option=y``."""
    if config.startswith(b"\x1f\x8b"):
        config = gzip.decompress(config)[:_CONFIG_LIMIT]
    return re.search(rb"^" + re.escape(option.encode()) + rb"=y\s*$", config, re.MULTILINE) is not None


def choose(requested: str, kernel_config: bytes | None, *, kernel: str) -> str:
    """The compression to use; ``kernel_config`` is the kernel image's /config if it has one,
    ``kernel`` names the kernel image in errors."""
    check_choice(requested)
    if requested == "gzip":
        return "gzip"
    if requested == "zstd":
        if kernel_config is not None and not config_enables(kernel_config, _OPTION["zstd"]):
            raise UsageError(f"--initrd-compression zstd: kernel {kernel} cannot unpack a zstd initramfs "
                             f"(its /config does not set {_OPTION['zstd']}=y); use gzip")
        return "zstd"
    if kernel_config is not None and config_enables(kernel_config, _OPTION["zstd"]):
        return "zstd"
    return "gzip"
