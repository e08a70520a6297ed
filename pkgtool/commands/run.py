"""`pkgtool run qemu`: boot image outputs under QEMU (TCG, serial console on stdout)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, BinaryIO

from pkgtool.arches import ARCHES


def register(sub: Any) -> None:
    parser = sub.add_parser("run", help="boot built images")
    parser.set_defaults(func=lambda _args: _usage())
    run_sub = parser.add_subparsers(dest="run_command", metavar="BACKEND")
    qemu = run_sub.add_parser(
        "qemu", help="boot under QEMU with TCG",
        description="PATH is an output prefix (OUT/NAME: boots NAME-kernel + NAME-initrd.img, or "
        "NAME.iso with --iso) or an .iso or disk image (.img, .raw, .qcow2, .vhd, .vmdk).  Forwarded "
        "ports (--publish) listen on the host's 127.0.0.1 only.",
    )
    qemu.add_argument("path", metavar="PATH")
    qemu.add_argument("--arch", default="amd64", choices=ARCHES)
    qemu.add_argument("--mem", type=int, default=2048, metavar="MIB", help="guest memory (default 2048)")
    qemu.add_argument("--cpus", type=int, default=1)
    qemu.add_argument("--publish", action="append", default=[], metavar="HOST:GUEST",
                      help="forward a TCP port of the host's 127.0.0.1 to the guest (repeatable)")
    qemu.add_argument("--timeout", type=float, default=None, metavar="S", help="stop the VM after S seconds")
    qemu.add_argument("--uefi", action="store_true", help="boot with UEFI firmware (OVMF/AAVMF)")
    qemu.add_argument("--iso", action="store_true", help="boot PATH.iso (PATH-efi.iso with --uefi)")
    qemu.add_argument("--no-pvh", action="store_true", help="amd64: boot the bzImage, not its ELF vmlinux")
    qemu.add_argument("--disk", action="append", default=[], metavar="FILE[,size=S][,format=F]",
                      help="attach a data disk (repeatable), created empty if missing: size 2G, 512M, ... "
                      "(a bare number counts GiB; default 1G), format raw or qcow2 (default: from the suffix)")
    qemu.add_argument("--data", default=None, metavar="STRING",
                      help="user data for pkg/metadata, on a CD-ROM labelled cidata (user-data)")
    qemu.add_argument("--data-file", default=None, metavar="FILE", help="as --data, from FILE")
    qemu.add_argument("--state", default=None, metavar="DIR",
                      help="keep this VM's files in DIR: relative --disk paths, the --data CD-ROM (data.iso) "
                      "and the console log (console.log, appended)")
    qemu.set_defaults(func=cmd_qemu)


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool run: missing backend (qemu)")


def _make_state_dir(state: Path) -> None:
    from pkgtool.errors import UsageError

    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--state {state}: cannot make the directory ({exc.strerror or exc})") from None


class _Tee:
    """The console to the terminal and, appended, to the state directory's log."""

    def __init__(self, *outs: BinaryIO) -> None:
        self.outs = outs

    def write(self, data: bytes) -> None:
        for out in self.outs:
            out.write(data)

    def flush(self) -> None:
        for out in self.outs:
            out.flush()


def cmd_qemu(args: argparse.Namespace) -> int:
    import sys
    import tempfile

    from pkgtool.errors import UsageError
    from pkgtool.run.cidata import read_data, write_cidata
    from pkgtool.run.disks import ensure_disk, parse_disk
    from pkgtool.run.qemu import VMConfig, boot, find_media, parse_publish

    if args.mem < 64 or args.cpus < 1:
        raise UsageError("--mem must be at least 64 (MiB) and --cpus at least 1")
    media = find_media(Path(args.path), iso=args.iso, uefi=args.uefi)
    publish = tuple(parse_publish(p) for p in args.publish)
    data = read_data(data=args.data, data_file=args.data_file)
    state = Path(args.state).expanduser() if args.state else None
    specs = [parse_disk(spec, base=state) for spec in args.disk]
    paths = [spec.path.resolve() for spec in specs]
    if len(set(paths)) != len(paths):
        raise UsageError("--disk: the same file is named twice")
    if state is not None:
        _make_state_dir(state)
    disks = tuple(ensure_disk(spec) for spec in specs)
    with tempfile.TemporaryDirectory(prefix="pkgtool-qemu-") as work:
        cdrom = write_cidata(data, (state or Path(work)) / "data.iso") if data is not None else None
        vm = VMConfig(arch=args.arch, mem_mib=args.mem, cpus=args.cpus, uefi=args.uefi, publish=publish,
                      disks=disks, cdrom=cdrom)
        if state is None:
            result = boot(media, vm, work=Path(work), timeout=args.timeout, pvh=not args.no_pvh)
        else:
            with (state / "console.log").open("ab") as log:
                result = boot(media, vm, work=Path(work), timeout=args.timeout, pvh=not args.no_pvh,
                              sink=_Tee(sys.stdout.buffer, log), keep_stdin=True)
    if result.timed_out:
        print(f"pkgtool: stopped the VM after the {args.timeout:g} s timeout", file=sys.stderr)
        return 0
    return result.returncode or 0
