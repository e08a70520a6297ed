"""Boot ``pkgtool image build`` outputs under QEMU with TCG, like ``linuxkit run qemu``.

The serial console is QEMU's stdio (``-nographic``), networking is QEMU's user mode with
optional TCP port forwards, and ``-no-reboot`` turns a reboot or a panic (with
``panic=-1``) into an exit.  TCG always: ``/dev/kvm`` may exist and still not work (nested
virtualisation on CI runners), and the boot tests must behave the same everywhere.

Per-arch machines (probed with Debian's QEMU 7.2 and kernels):

* amd64: the default ``pc`` machine, or ``q35`` with OVMF pflash for UEFI; console ttyS0.
  A bzImage is unpacked to its ELF ``vmlinux`` (the XZ payload) when possible: QEMU then
  boots it through PVH and skips the slow real-mode decompression under TCG (~3x faster).
* arm64: ``virt`` with a Cortex-A57; console ttyAMA0; UEFI from ``qemu-efi-aarch64``.
* s390x: ``s390-ccw-virtio``; console ttysclp0; kernel+initrd only.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pkgtool.arches import ARCHES
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.run.disks import DiskSpec

BINARY = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64", "s390x": "qemu-system-s390x"}
PACKAGE = {"amd64": "qemu-system-x86", "arm64": "qemu-system-arm", "s390x": "qemu-system-misc"}
CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0", "s390x": "ttysclp0"}
NET_DEVICE = {"amd64": "virtio-net-pci", "arm64": "virtio-net-pci", "s390x": "virtio-net-ccw"}
SCSI_CONTROLLER = {"amd64": "virtio-scsi-pci", "arm64": "virtio-scsi-pci", "s390x": "virtio-scsi-ccw"}
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
AAVMF = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
_XZ_MAGIC = b"\xfd7zXZ\x00"
# QEMU's block driver for each disk image suffix `pkgtool image build` writes (a fixed VHD is
# raw data plus a footer, which QEMU's probing would take for raw: the driver is named).
DISK_FORMATS = {".img": "raw", ".raw": "raw", ".qcow2": "qcow2", ".vhd": "vpc", ".vmdk": "vmdk"}


@dataclass(frozen=True)
class Media:
    """What to boot: ``kernel`` (+ ``initrd``, ``cmdline``), an ``iso`` or a ``disk``."""

    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    iso: Path | None = None
    disk: Path | None = None

    @property
    def kind(self) -> str:
        return "iso" if self.iso else "disk" if self.disk else "kernel"


@dataclass(frozen=True)
class VMConfig:
    arch: str
    # Debian kernels bring ~400 MB of modules into the initramfs, which init moves onto a
    # tmpfs before it runs containers: the kernel needs room for both while it unpacks.
    mem_mib: int = 2048
    cpus: int = 1
    uefi: bool = False
    publish: tuple[tuple[int, int], ...] = ()  # (host port, guest port)
    networking: bool = True
    disks: tuple[DiskSpec, ...] = ()  # data disks, after the boot disk (vdb, ... or vda, ...)
    cdrom: Path | None = None  # the user-data CD-ROM (pkgtool.run.cidata), as SCSI
    extra: tuple[str, ...] = field(default=())


def parse_publish(text: str) -> tuple[int, int]:
    """``HOST:GUEST`` (or one port for both) as LinuxKit's ``--publish`` takes it (TCP)."""
    spec = text.removesuffix("/tcp")
    host, _, guest = spec.partition(":")
    guest = guest or host
    if not (host.isdigit() and guest.isdigit()) or not (0 < int(host) < 65536 and 0 < int(guest) < 65536):
        raise UsageError(f"--publish {text!r}: expected HOST:GUEST ports, e.g. 2222:22")
    return int(host), int(guest)


def find_media(path: Path, *, iso: bool = False, uefi: bool = False) -> Media:
    """The boot media for ``path``: a file (``.iso``, ``.img``, ``.qcow2``) or an output prefix.

    A prefix ``OUT/NAME`` means ``OUT/NAME-kernel`` + ``-initrd.img`` + ``-cmdline``, or with
    ``iso`` the ``NAME.iso`` (``NAME-efi.iso`` with ``uefi``), as ``linuxkit run`` finds them.
    """
    if path.is_file():
        if path.suffix == ".iso":
            return Media(iso=path)
        if path.suffix in DISK_FORMATS:
            return Media(disk=path)
        raise UsageError(f"{path}: not an .iso or a disk image ({', '.join(DISK_FORMATS)}); "
                         "give the output prefix (e.g. out/NAME) for kernel+initrd")
    base = path.parent / path.name
    if iso:
        candidate = base.parent / f"{base.name}{'-efi' if uefi else ''}.iso"
        if not candidate.is_file():
            raise UsageError(f"no ISO at {candidate}")
        return Media(iso=candidate)
    kernel = base.parent / f"{base.name}-kernel"
    initrd = base.parent / f"{base.name}-initrd.img"
    cmdline = base.parent / f"{base.name}-cmdline"
    if not kernel.is_file() or not initrd.is_file():
        raise UsageError(f"no {kernel.name} and {initrd.name} in {base.parent or '.'}: build with --format kernel+initrd")
    return Media(kernel=kernel, initrd=initrd, cmdline=cmdline.read_text().strip() if cmdline.is_file() else "")


def pvh_kernel(bzimage: Path, work: Path) -> Path | None:
    """The ELF ``vmlinux`` inside an x86 bzImage with an XZ payload, or None if there is none."""
    data = bzimage.read_bytes()
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    start = data.find(_XZ_MAGIC)
    if start < 0:
        return None
    try:
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    except lzma.LZMAError:
        return None
    if not elf.startswith(b"\x7fELF"):
        return None
    out = work / "vmlinux"
    out.write_bytes(elf)
    return out


def qemu_command(media: Media, vm: VMConfig, *, kernel: Path | None = None, vars_file: Path | None = None) -> list[str]:
    """The QEMU command line; ``kernel`` overrides ``media.kernel`` (e.g. the PVH vmlinux)."""
    if vm.arch not in ARCHES:
        raise UsageError(f"unsupported architecture {vm.arch!r} (one of: {', '.join(ARCHES)})")
    if vm.arch == "s390x" and (media.kind != "kernel" or vm.uefi):
        raise UsageError("s390x boots kernel+initrd only (no ISO, disk or UEFI)")
    cmd = [BINARY[vm.arch], "-accel", "tcg", "-m", str(vm.mem_mib), "-smp", str(vm.cpus), "-nographic", "-no-reboot"]
    if vm.arch == "arm64":
        cmd += ["-M", "virt", "-cpu", "cortex-a57"]
    elif vm.arch == "s390x":
        cmd += ["-M", "s390-ccw-virtio"]
    if vm.uefi:
        if vm.arch == "amd64":
            if vars_file is None:
                raise PkgtoolError("internal: UEFI needs a writable OVMF variables file")
            cmd += ["-M", "q35",
                    "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]
        else:
            cmd += ["-bios", str(AAVMF)]
    if media.kind == "kernel":
        assert media.kernel is not None and media.initrd is not None
        cmdline = media.cmdline or f"console={CONSOLE[vm.arch]}"
        cmd += ["-kernel", str(kernel or media.kernel), "-initrd", str(media.initrd), "-append", cmdline]
    elif media.kind == "iso":
        cmd += ["-cdrom", str(media.iso)]
    else:
        assert media.disk is not None
        fmt = DISK_FORMATS.get(media.disk.suffix, "raw")
        # snapshot=on: the VM's writes never change the built (reproducible) image.
        cmd += ["-drive", f"file={media.disk},format={fmt},if=virtio,snapshot=on"]
    for disk in vm.disks:
        cmd += ["-drive", f"file={disk.path},format={disk.driver},if=virtio"]
    if vm.cdrom is not None:
        # A SCSI CD-ROM (sr0) on a virtio-scsi controller: the virtio drivers every arch has.
        cmd += ["-device", f"{SCSI_CONTROLLER[vm.arch]},id=cidata-scsi",
                "-drive", f"if=none,id=cidata,file={vm.cdrom},format=raw,media=cdrom,readonly=on",
                "-device", "scsi-cd,drive=cidata,bus=cidata-scsi.0"]
    if vm.networking:
        # Forwards listen on the host's loopback only: a VM's services (an unauthenticated
        # dockerd among them) are for this host, never for its network.
        forwards = "".join(f",hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in vm.publish)
        cmd += ["-netdev", f"user,id=n0{forwards}", "-device", f"{NET_DEVICE[vm.arch]},netdev=n0"]
    else:
        cmd += ["-nic", "none"]
    return [*cmd, *vm.extra]


def firmware_check(vm: VMConfig) -> None:
    if not shutil.which(BINARY[vm.arch]):
        raise PkgtoolError(f"{BINARY[vm.arch]} is not installed: apt-get install {PACKAGE[vm.arch]}")
    if vm.uefi and vm.arch == "amd64" and not (OVMF_CODE.is_file() and OVMF_VARS.is_file()):
        raise PkgtoolError(f"UEFI boot needs {OVMF_CODE}: apt-get install ovmf")
    if vm.uefi and vm.arch == "arm64" and not AAVMF.is_file():
        raise PkgtoolError(f"UEFI boot needs {AAVMF}: apt-get install qemu-efi-aarch64")


class Sink(Protocol):
    """Where a VM's console goes: a binary file, or anything that writes and flushes bytes."""

    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


@dataclass(frozen=True)
class RunResult:
    returncode: int | None  # None: stopped at the timeout
    output: bytes  # what was captured (empty when streaming to a terminal)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def text(self) -> str:
        return self.output.decode("utf-8", "replace").replace("\r", "")


def run_vm(cmd: Sequence[str], *, timeout: float | None, capture: bool = False, sink: Sink | None = None,
           stop_marker: bytes | None = None, keep_stdin: bool = False) -> RunResult:
    """Run QEMU; stop it at ``timeout`` seconds (or once ``stop_marker`` was printed).

    The console goes to ``sink`` and, with ``capture``, into the result; else to stdout.
    ``keep_stdin`` leaves QEMU this process's stdin (the console's input) while its output
    goes to ``sink``, as ``run qemu --state`` does to keep a log of an interactive console.
    """
    stdout = subprocess.PIPE if capture or sink is not None or stop_marker else None
    stdin = subprocess.DEVNULL if stdout and not keep_stdin else None
    proc = subprocess.Popen(list(cmd), stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT if stdout else None)
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: list[bytes] = []
    try:
        if stdout is None:
            try:
                return RunResult(proc.wait(timeout=timeout), b"")
            except subprocess.TimeoutExpired:
                return RunResult(None, b"")
        assert proc.stdout is not None
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)
        seen = b""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return RunResult(None, b"".join(chunks))
            if not selector.select(timeout=left):
                continue
            data = proc.stdout.read1(65536)  # type: ignore[attr-defined]
            if not data:
                return RunResult(proc.wait(), b"".join(chunks))
            if capture or stop_marker is not None:
                chunks.append(data)
            if sink is not None:
                sink.write(data)
                sink.flush()
            if stop_marker is not None:
                seen = (seen + data)[-(len(stop_marker) + 65536):]
                if stop_marker in seen:
                    return RunResult(0, b"".join(chunks))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def boot(media: Media, vm: VMConfig, *, work: Path, timeout: float | None, capture: bool = False,
         sink: Sink | None = None, stop_marker: bytes | None = None, pvh: bool = True,
         keep_stdin: bool = False) -> RunResult:
    """Prepare firmware and kernel, then run the VM (see :func:`run_vm`)."""
    firmware_check(vm)
    kernel = None
    if pvh and vm.arch == "amd64" and media.kind == "kernel" and media.kernel is not None:
        kernel = pvh_kernel(media.kernel, work)
    vars_file = None
    if vm.uefi and vm.arch == "amd64":
        # OVMF writes its variables: give it a private copy.
        vars_file = work / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, vars_file)
    cmd = qemu_command(media, vm, kernel=kernel, vars_file=vars_file)
    if not capture and stop_marker is None:
        print(f"pkgtool: {' '.join(cmd)}", file=sys.stderr)
    return run_vm(cmd, timeout=timeout, capture=capture, sink=sink, stop_marker=stop_marker, keep_stdin=keep_stdin)
