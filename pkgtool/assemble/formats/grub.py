"""GRUB pieces shared by the ISO and disk formats, built with ``grub-mkimage`` (no install).

Each boot image embeds every module it needs and a small early config that finds the
file system holding ``/boot/grub/grub.cfg`` and loads it, so no GRUB module directory has
to be copied onto the media and the same ``grub.cfg`` serves BIOS and UEFI.
``grub-mkimage`` output depends only on its inputs (checked by the reproducibility tests);
``grub-mkrescue`` is not used because it embeds a time-derived search UUID and builds its
FAT image with a random serial.
"""

from __future__ import annotations

from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.hosttools import require_tool, run
from pkgtool.errors import PkgtoolError

GRUB_LIB = Path("/usr/lib/grub")
MKIMAGE = ("grub-mkimage", "grub-common")
# Debian package with each platform's modules, for the "not installed" error.
PLATFORM_PACKAGES = {
    "i386-pc": "grub-pc-bin",
    "x86_64-efi": "grub-efi-amd64-bin",
    "arm64-efi": "grub-efi-arm64-bin",
}
EFI_PLATFORM = {"amd64": "x86_64-efi", "arm64": "arm64-efi"}
EFI_BOOT_NAME = {"amd64": "BOOTX64.EFI", "arm64": "BOOTAA64.EFI"}

_COMMON_MODULES = (
    "normal", "configfile", "linux", "search", "search_fs_file", "echo", "test", "gzio",
    "part_gpt", "part_msdos", "fat", "iso9660", "serial", "terminal",
)
_PLATFORM_MODULES = {
    "i386-pc": ("biosdisk",),
    "i386-pc-eltorito": ("biosdisk",),
    "x86_64-efi": ("efi_gop", "all_video"),
    "arm64-efi": ("efi_gop",),
}
# Found by a file only our media carry at that path; the ESP of an ISO holds only EFI/.
EARLY_CONFIG = (
    "search --no-floppy --set=root --file /boot/grub/grub.cfg\n"
    "set prefix=($root)/boot/grub\n"
    "configfile $prefix/grub.cfg\n"
)


def grub_cfg(inp: FormatInput, *, boot_dir: str = "/boot") -> str:
    """The menu: boot ``BOOT_DIR/kernel`` with ``BOOT_DIR/initrd.img`` and the image's command line."""
    if "\n" in inp.cmdline:
        raise PkgtoolError("kernel cmdline must be one line")
    serial = "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n" if inp.arch == "amd64" else ""
    ucode = f" {boot_dir}/ucode.img" if inp.ucode is not None else ""
    return (
        "set timeout=0\nset default=0\n" + serial
        + f"menuentry '{inp.name}' {{\n"
        + f"  linux {boot_dir}/kernel {inp.cmdline}\n"
        + f"  initrd{ucode} {boot_dir}/initrd.img\n"
        + "}\n"
    )


def check_platform(platform: str, *, purpose: str) -> Path:
    directory = GRUB_LIB / ("i386-pc" if platform.startswith("i386-pc") else platform)
    if not (directory / "kernel.img").is_file():
        package = PLATFORM_PACKAGES["i386-pc" if platform.startswith("i386-pc") else platform]
        raise PkgtoolError(f"{purpose} needs GRUB for {platform} ({directory}), which is not installed: apt-get install {package}")
    return directory


def early_config(cfg: str) -> str:
    """The config embedded in a boot image: find the file system holding ``cfg`` and load it."""
    return (
        f"search --no-floppy --set=root --file {cfg}\n"
        f"set prefix=($root){cfg.rsplit('/', 1)[0]}\n"
        f"configfile ($root){cfg}\n"
    )


def mkimage(platform: str, dest: Path, *, prefix: str, work: Path, purpose: str,
            early: str = EARLY_CONFIG) -> Path:
    """A GRUB core image for ``platform`` (``i386-pc``, ``i386-pc-eltorito``, ``x86_64-efi``,
    ``arm64-efi``) that runs ``early`` (by default: load ``/boot/grub/grub.cfg``)."""
    require_tool(*MKIMAGE, purpose=purpose)
    directory = check_platform(platform, purpose=purpose)
    early_file = work / "grub-early.cfg"
    early_file.write_text(early)
    modules = (*_COMMON_MODULES, *_PLATFORM_MODULES[platform])
    run(["grub-mkimage", "-O", platform, "-d", directory, "-p", prefix, "-c", early_file, "-o", dest, *modules],
        what=purpose)
    return dest
