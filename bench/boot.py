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

**examples/docker.yml**, amd64 only, its own case (``--docker-runs``, 0 to skip): booted as
its header says (a new 2 GiB qcow2 data disk, the daemon's settings on a cidata CD-ROM, the
API port forwarded), the time from QEMU's start until the host's ``docker info`` answers,
on the first boot (the disk is formatted) and on a second boot of the same disk, each
interleaved with a boot of examples/minimal.yml; printed against minimal's marker time
(target <= 1.5x).  The VM powers off through the daemon (a container signals init).

    python bench/boot.py [--runs N] [--arch amd64 ...] [--docker-runs N]

The images come from tests/pkgsetkit.py (built, or found in the registry at their
content-hash tags), so the figures are for the repository as committed.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import imagekit
import pkgsetkit

from pkgtool import settings
from pkgtool.assemble.cpio import TRAILER, compressor, header
from pkgtool.run.cidata import write_cidata
from pkgtool.run.disks import DiskSpec, ensure_disk
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def docker_boot(cmd: Sequence[str], port: int, image: str) -> float:
    """Boot the docker example; seconds from QEMU's start until `docker info` answers."""
    docker = ["docker", "--host", f"tcp://127.0.0.1:{port}"]
    console: dict[str, Console] = {}
    start = time.monotonic()
    vm = threading.Thread(target=lambda: console.update(lines=run_console(cmd)))
    vm.start()
    answered = None
    while vm.is_alive() and time.monotonic() - start < TIMEOUT:
        if subprocess.run([*docker, "info"], capture_output=True, timeout=60).returncode == 0:
            answered = time.monotonic() - start
            break
        time.sleep(0.2)
    # Power off through the daemon: a container in the VM's PID namespace signals init.
    subprocess.run([*docker, "run", "--rm", "--privileged", "--pid", "host", image, "kill", "-USR2", "1"],
                   capture_output=True, timeout=120)
    vm.join(timeout=TIMEOUT)
    if answered is None:
        last = [line for _, line in console.get("lines", [])[-8:]]
        raise SystemExit(f"docker.yml: `docker info` never answered; last console lines: {last}")
    return answered


def bench_docker(root: Path, work: Path, runs: int) -> None:
    """examples/docker.yml on amd64 to a reachable `docker info`, against minimal.yml's marker."""
    registry = settings.registry()
    out = work / "docker"
    for yml, dest in (("docker.yml", out), ("minimal.yml", work / "docker-minimal")):
        subprocess.run([sys.executable, "-m", "pkgtool", "--cache-dir", str(work / "cache"), "image", "build",
                        str(root / "examples" / yml), "--arch", "amd64", "--dir", str(dest)],
                       check=True, cwd=root, stdout=subprocess.DEVNULL)
    repository = f"pkgtool-bench/{secrets.token_hex(4)}/busybox"
    imagekit.push_image(registry, repository, "1", [imagekit.busybox_image_layer("amd64")], arch="amd64",
                        config={"Entrypoint": ["/bin/busybox"]})
    port = registry.rsplit(":", 1)[1]
    image = f"10.0.2.2:{port}/{repository}:1"
    data = {"docker": {"entries": {"daemon.json": {"content": json.dumps({"insecure-registries": [f"10.0.2.2:{port}"]})}}}}
    cdrom = write_cidata(json.dumps(data).encode(), out / "data.iso")
    minimal_cmd, _ = boot_commands(work / "docker-minimal" / "minimal", "amd64", work / "docker-minimal")
    media = find_media(out / "docker")
    assert media.kernel is not None
    kernel = pvh_kernel(media.kernel, out)
    minimal, first, second = [], [], []
    for run in range(runs):
        disk = ensure_disk(DiskSpec(out / f"disk-{run}.qcow2", size=2 << 30))
        vm = VMConfig(arch="amd64", disks=(disk,), cdrom=cdrom, publish=((_free_port(), 2375),))
        cmd = qemu_command(media, vm, kernel=kernel)
        minimal.append(phases(run_console(minimal_cmd), init="/init", marker="PKGTOOL-MINIMAL-MARKER x86_64",
                              container=None).marker)
        first.append(docker_boot(cmd, vm.publish[0][0], image))
        second.append(docker_boot(cmd, vm.publish[0][0], image))
    base = statistics.median(minimal)
    size = (media.kernel.stat().st_size + (media.initrd.stat().st_size if media.initrd else 0)) / 1e6
    print(f"amd64  docker.yml kernel+initrd {size:5.1f} MB;  minimal.yml marker {base:5.2f} s (baseline)")
    for label, values in (("first boot (formats the disk)", first), ("second boot (same disk)", second)):
        value = statistics.median(values)
        print(f"amd64    docker info after {value:5.2f} s, {label}: {value / base:.2f}x minimal  target <= 1.5",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="boots of each kind per arch (median)")
    parser.add_argument("--arch", action="append", choices=pkgsetkit.ARCHES, help="default: all three")
    parser.add_argument("--docker-runs", type=int, default=2,
                        help="boots of examples/docker.yml (amd64; 0 to skip), each a first and a second boot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-boot-") as tmp:
        work = Path(tmp)
        print("publishing the package set (a no-op when the registry has it) ...", file=sys.stderr)
        pkgset = pkgsetkit.publish(settings.registry(), work)
        print(f"examples/minimal.yml, {args.runs} boots each, medians; seconds from QEMU's start (TCG, 1 CPU)")
        arches = args.arch or pkgsetkit.ARCHES
        for arch in arches:
            bench_arch(pkgset.root, arch, work, args.runs)
        if args.docker_runs > 0 and "amd64" in arches:
            print(f"examples/docker.yml, {args.docker_runs} first and second boots, medians (TCG, 1 CPU)")
            bench_docker(pkgset.root, work, args.docker_runs)


if __name__ == "__main__":
    main()
