"""Boot benchmark: examples/minimal.yml against the floor, per arch, under QEMU TCG.

For each arch, in one run and interleaved (so that load from other work hits both alike):

* **the floor**: the same kernel file, QEMU machine and command line as the image, with a
  one-file initramfs: a static busybox (Debian's busybox-static; plus the ``/dev/console``
  node every initramfs needs) that the kernel starts as its init (``rdinit=/busybox``:
  busybox picks its applet from the program's name, so it cannot be called ``/init``) and
  that prints a marker and powers off;
* **examples/minimal.yml** as committed (the VM kernel flavour, kernel+initrd, the default
  initrd compression), its console broken into phases: the kernel to ``Run /init``,
  ``/init`` to the first onboot container's ``init: onboot ...: starting`` line, from
  there to that container's marker (runc starting a container: two Go programs, new
  namespaces, mounts), and QEMU's exit after the power-off.

Times are seconds from QEMU's start (the amd64 ELF ``vmlinux`` for the PVH entry is unpacked
before the clock starts, for both), medians of RUNS boots.  Printed per arch: the compressed
size of kernel + initrd (target <= 30 MB), /init to the first container (target <= 1.0 s),
and the ratio of the marker time to the floor's (target <= 1.3).

    python bench/boot.py [--runs N] [--arch amd64 ...]

The images come from tests/pkgsetkit.py (built, or found in the registry at their
content-hash tags), so the figures are for the repository as committed.
"""

from __future__ import annotations

import argparse
import re
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import imagekit
import pkgsetkit

from pkgtool import settings
from pkgtool.assemble.cpio import TRAILER, compressor, header
from pkgtool.run.qemu import Media, VMConfig, find_media, pvh_kernel, qemu_command

UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}
FLOOR_MARKER = "PKGTOOL-FLOOR-MARKER"
TIMEOUT = 300.0
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

Console = list[tuple[float, str]]  # (seconds since QEMU started, line)


@dataclass(frozen=True)
class Phases:
    to_init: float  # kernel to "Run /init" (the floor: "Run /busybox")
    to_container: float | None  # /init to the first onboot container's start (the image only)
    marker: float  # since QEMU started
    poweroff: float  # QEMU exited


def run_console(cmd: Sequence[str], *, timeout: float = TIMEOUT) -> Console:
    """Run QEMU, return every console line with the time it arrived."""
    start = time.monotonic()
    proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    lines: Console = []
    pending = b""
    try:
        while time.monotonic() - start < timeout:
            if not selector.select(timeout=1.0):
                continue
            data = proc.stdout.read1(65536)  # type: ignore[attr-defined]
            now = time.monotonic() - start
            if not data:
                proc.wait()
                lines.append((now, "<exit>"))
                return lines
            pending += data
            *complete, pending = pending.split(b"\n")
            lines.extend((now, raw.decode("utf-8", "replace").replace("\r", "").strip()) for raw in complete)
        raise SystemExit(f"{cmd[0]}: no power-off within {timeout:g} s; last lines: {[t for _, t in lines[-5:]]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def phases(console: Console, *, init: str, marker: str, container: str | None) -> Phases:
    """Split a console into the phases named in the module docstring."""
    def when(pattern: str) -> float:
        regex = re.compile(pattern)
        found = next((t for t, line in console if regex.search(line)), None)
        if found is None:
            raise SystemExit(f"{pattern!r} never appeared on the console; last lines: {[t for _, t in console[-8:]]}")
        return found

    to_init = when(rf"Run {re.escape(init)} as init process")
    started = when(container) - to_init if container else None
    return Phases(to_init=to_init, to_container=started, marker=when(rf"^{re.escape(marker)}$"),
                  poweroff=when(r"^<exit>$"))


def floor_initrd(arch: str, out: Path, *, zstd: bool) -> Path:
    """The floor's initramfs: /busybox and /dev/console, compressed like the image's."""
    busybox = imagekit.busybox(arch).read_bytes()
    entries = [
        (b"busybox", 0o100755, busybox, (0, 0)),
        (b"dev", 0o040755, b"", (0, 0)),
        (b"dev/console", 0o020600, b"", (5, 1)),
    ]
    with out.open("wb") as raw, compressor(raw, "zstd" if zstd else "gzip") as stream:
        for ino, (name, mode, data, (major, minor)) in enumerate(entries, start=1):
            stream.write(header(name=name, ino=ino, mode=mode, uid=0, gid=0, nlink=1, mtime=0, size=len(data),
                                rdevmajor=major, rdevminor=minor))
            stream.write(data + b"\0" * (-len(data) % 4))
        stream.write(header(name=TRAILER.encode(), ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, size=0))
    return out


def boot_commands(prefix: Path, arch: str, work: Path) -> tuple[list[str], list[str]]:
    """QEMU command lines of the image and of its floor (same kernel file, machine, cmdline)."""
    media = find_media(prefix)
    assert media.kernel is not None and media.initrd is not None
    vm = VMConfig(arch=arch)  # what `pkgtool run qemu` uses: 2 GiB, 1 CPU, user networking
    kernel = pvh_kernel(media.kernel, work) if arch == "amd64" else None
    zstd = media.initrd.read_bytes()[:4] == ZSTD_MAGIC
    floor = Media(kernel=media.kernel, initrd=floor_initrd(arch, work / "floor.img", zstd=zstd),
                  cmdline=f'{media.cmdline} rdinit=/busybox -- sh -c "echo {FLOOR_MARKER}; /busybox poweroff -f"')
    return qemu_command(media, vm, kernel=kernel), qemu_command(floor, vm, kernel=kernel)


def median_phases(samples: list[Phases]) -> Phases:
    containers = [s.to_container for s in samples if s.to_container is not None]
    return Phases(to_init=statistics.median(s.to_init for s in samples),
                  to_container=statistics.median(containers) if containers else None,
                  marker=statistics.median(s.marker for s in samples),
                  poweroff=statistics.median(s.poweroff for s in samples))


def bench_arch(root: Path, arch: str, work: Path, runs: int) -> None:
    out = work / arch
    subprocess.run([sys.executable, "-m", "pkgtool", "--cache-dir", str(work / "cache"), "image", "build",
                    str(root / "examples/minimal.yml"), "--arch", arch, "--dir", str(out)],
                   check=True, cwd=root, stdout=subprocess.DEVNULL)
    image_cmd, floor_cmd = boot_commands(out / "minimal", arch, out)
    marker = f"PKGTOOL-MINIMAL-MARKER {UNAME[arch]}"
    image_runs, floor_runs = [], []
    for _ in range(runs):
        floor_runs.append(phases(run_console(floor_cmd), init="/busybox", marker=FLOOR_MARKER, container=None))
        image_runs.append(phases(run_console(image_cmd), init="/init", marker=marker,
                                 container=r"^init: onboot 000-\S+: starting$"))
    floor, image = median_phases(floor_runs), median_phases(image_runs)
    kernel, initrd = (out / "minimal-kernel").stat().st_size, (out / "minimal-initrd.img").stat().st_size
    size = (kernel + initrd) / 1e6
    assert image.to_container is not None
    print(f"{arch:6} kernel+initrd {size:5.1f} MB ({kernel / 1e6:.1f} + {initrd / 1e6:.1f})  target <= 30 MB")
    print(f"{arch:6}   floor      kernel->init {floor.to_init:5.2f} s  marker {floor.marker:5.2f} s  "
          f"poweroff {floor.poweroff:5.2f} s  (baseline)")
    runc = image.marker - image.to_init - image.to_container
    print(f"{arch:6}   minimal    kernel->/init {image.to_init:5.2f} s  /init->first container "
          f"{image.to_container:5.2f} s (target <= 1.0)  container->marker {runc:5.2f} s  "
          f"marker {image.marker:5.2f} s  poweroff {image.poweroff:5.2f} s")
    print(f"{arch:6}   marker ratio {image.marker / floor.marker:.2f}x the floor  target <= 1.3", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="boots of each kind per arch (median)")
    parser.add_argument("--arch", action="append", choices=pkgsetkit.ARCHES, help="default: all three")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-boot-") as tmp:
        work = Path(tmp)
        print("publishing the package set (a no-op when the registry has it) ...", file=sys.stderr)
        pkgset = pkgsetkit.publish(settings.registry(), work)
        print(f"examples/minimal.yml, {args.runs} boots each, medians; seconds from QEMU's start (TCG, 1 CPU)")
        for arch in args.arch or pkgsetkit.ARCHES:
            bench_arch(pkgset.root, arch, work, args.runs)


if __name__ == "__main__":
    main()
