"""`pkgtool run qemu`: boot image outputs under QEMU (TCG, serial console on stdout)."""

from __future__ import annotations

import argparse
from typing import Any

from pkgtool.arches import ARCHES


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="boot built images")
    parser.set_defaults(func=lambda _args: _usage())
    run_sub = parser.add_subparsers(dest="run_command", metavar="BACKEND")
    qemu = run_sub.add_parser(
        "qemu", help="boot under QEMU with TCG",
        description="PATH is an output prefix (OUT/NAME: boots NAME-kernel + NAME-initrd.img, or "
        "NAME.iso with --iso) or an .iso/.img/.qcow2 file.",
    )
    qemu.add_argument("path", metavar="PATH")
    qemu.add_argument("--arch", default="amd64", choices=ARCHES)
    qemu.add_argument("--mem", type=int, default=2048, metavar="MIB", help="guest memory (default 2048)")
    qemu.add_argument("--cpus", type=int, default=1)
    qemu.add_argument("--publish", action="append", default=[], metavar="HOST:GUEST",
                      help="forward a host TCP port to the guest (repeatable)")
    qemu.add_argument("--timeout", type=float, default=None, metavar="S", help="stop the VM after S seconds")
    qemu.add_argument("--uefi", action="store_true", help="boot with UEFI firmware (OVMF/AAVMF)")
    qemu.add_argument("--iso", action="store_true", help="boot PATH.iso (PATH-efi.iso with --uefi)")
    qemu.add_argument("--no-pvh", action="store_true", help="amd64: boot the bzImage, not its ELF vmlinux")
    qemu.set_defaults(func=cmd_qemu)


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool run: missing backend (qemu)")


def cmd_qemu(args: argparse.Namespace) -> int:
    import sys
    import tempfile
    from pathlib import Path

    from pkgtool.errors import UsageError
    from pkgtool.run.qemu import VMConfig, boot, find_media, parse_publish

    if args.mem < 64 or args.cpus < 1:
        raise UsageError("--mem must be at least 64 (MiB) and --cpus at least 1")
    media = find_media(Path(args.path), iso=args.iso, uefi=args.uefi)
    vm = VMConfig(arch=args.arch, mem_mib=args.mem, cpus=args.cpus, uefi=args.uefi,
                  publish=tuple(parse_publish(p) for p in args.publish))
    with tempfile.TemporaryDirectory(prefix="pkgtool-qemu-") as work:
        result = boot(media, vm, work=Path(work), timeout=args.timeout, pvh=not args.no_pvh)
    if result.timed_out:
        print(f"pkgtool: stopped the VM after the {args.timeout:g} s timeout", file=sys.stderr)
        return 0
    return result.returncode or 0
