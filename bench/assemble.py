"""OS-image assembly and boot benchmarks against the real stack (`scripts/stack up` first).

Measurements, each with its baseline taken in the same run:

* **assembly, warm cache**: ``pkgtool image build --format kernel+initrd`` (amd64) of a
  reference YAML, examples/sshd.yml with Debian's *whole* module tree (the kernel rebuilt
  here without kernel.yml's ``modules.exclude``: ~4,000 ``.ko`` files) and the package set,
  median wall time, as a ratio of ``tar -c | gzip -6`` of the same tree (the image's own
  ``tar`` output, unpacked) in the same run; target <= 1.0.  Peak RSS of each run from
  ``wait4``;
* **cold versus warm**: the same build with an empty cache (every blob pulled from the
  registry and verified) against the warm median;
* **boot**: seconds from starting ``pkgtool run qemu`` to the onboot marker of
  examples/minimal.yml on each arch (the committed VM kernel flavour), and on amd64 also
  with Debian's whole module tree, to show what trimming buys (bench/boot.py breaks the
  boot into phases against a floor).

    python bench/assemble.py

The package set and kernels come from tests/pkgsetkit.py (built, or found in the registry
at their content-hash tags), so the figures are for the repository as committed.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pkgsetkit

from pkgtool import settings
from pkgtool.kernel.kernel_build import build_kernel
from pkgtool.kernel.kernel_yml import load_kernel_spec
from pkgtool.oci.registry import RegistryClient

RUNS = 3
UNAME = {"amd64": "x86_64", "arm64": "aarch64", "s390x": "s390x"}


def timed(argv: list[str], *, cwd: Path | None = None, shell: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one child process (and what it waited for)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv if not shell else " ".join(argv), cwd=cwd, shell=shell,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        assert proc.stderr is not None
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss // 1024


def image_build(yaml: Path, *, cache: Path, out: Path, fmt: str, arch: str = "amd64") -> tuple[float, int]:
    return timed([sys.executable, "-m", "pkgtool", "--cache-dir", str(cache), "image", "build", str(yaml),
                  "--arch", arch, "--format", fmt, "--dir", str(out)])


def full_module_kernel(pkgset: pkgsetkit.PackageSet) -> str:
    """The full Debian flavour's amd64 kernel with its whole module tree, as TAG@DIGEST."""
    spec = load_kernel_spec(pkgset.root / "kernel" / "bookworm-6.1" / "kernel.yml")
    spec = dataclasses.replace(spec, image="pkgtool-bench/kernel-full", modules_exclude=(), modules_include=(),
                               arches=tuple(a for a in spec.arches if a.arch == "amd64"))
    result = build_kernel(spec, registry=pkgset.registry, log=lambda m: print(f"  kernel: {m}", file=sys.stderr))
    with RegistryClient(pkgset.registry) as client:
        found = client.head_manifest(spec.image, result.tag)
    assert found is not None, result.ref
    return f"{result.ref}@{found.digest}"


def count_modules(tree: Path) -> int:
    return sum(1 for _ in tree.glob("lib/modules/*/kernel/**/*.ko*"))


def boot_to_marker(prefix: Path, arch: str, marker: str, timeout: float = 600) -> float:
    """Seconds from starting `pkgtool run qemu` to ``marker`` on the serial console."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "pkgtool", "run", "qemu", str(prefix), "--arch", arch,
                             "--timeout", str(int(timeout))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    found = None
    for raw in proc.stdout:
        if raw.decode(errors="replace").strip() == marker:
            found = time.monotonic() - start
            break
    proc.kill()
    proc.wait()
    if found is None:
        raise SystemExit(f"{arch}: the VM stopped without printing {marker!r}")
    return found


def main() -> None:
    registry = settings.registry()
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-") as tmp:
        work = Path(tmp)
        print("publishing the package set (a no-op when the registry has it) ...", file=sys.stderr)
        pkgset = pkgsetkit.publish(registry, work)
        full_kernel = full_module_kernel(pkgset)
        reference = work / "reference.yml"
        reference.write_text((pkgset.root / "examples/sshd.yml").read_text().replace(pkgset.kernel_ref, full_kernel))
        assert full_kernel in reference.read_text(), "examples/sshd.yml does not pin the package set's kernel"

        # -- assembly: cold, warm, and tar | gzip of the same tree ----------------------
        cache = work / "cache"
        cold, cold_rss = image_build(reference, cache=cache, out=work / "cold", fmt="kernel+initrd")
        warm_runs = [image_build(reference, cache=cache, out=work / f"warm{i}", fmt="kernel+initrd") for i in range(RUNS)]
        warm = statistics.median(s for s, _ in warm_runs)
        warm_rss = max(r for _, r in warm_runs)
        image_build(reference, cache=cache, out=work / "tar", fmt="tar")
        tree = work / "tree"
        tree.mkdir()
        subprocess.run(["tar", "-xpf", str(work / "tar" / "reference.tar"), "-C", str(tree)], check=True)
        modules = count_modules(tree)
        baseline = statistics.median(
            timed(["tar", "-cf", "-", "-C", str(tree), ".", "|", "gzip", "-6", ">", str(work / "baseline.tgz")],
                  shell=True)[0] for _ in range(RUNS))
        initrd = (work / "warm0" / "reference-initrd.img").stat().st_size
        print(f"reference image: examples/sshd.yml + Debian's whole module tree ({modules} .ko files), amd64")
        print(f"tar -c | gzip -6 of the same tree   {baseline:7.1f} s (baseline), {(work / 'baseline.tgz').stat().st_size / 2**20:.0f} MiB")
        print(f"image build kernel+initrd, warm     {warm:7.1f} s  ratio {warm / baseline:.2f}x  target <= 1.0, "
              f"initrd {initrd / 2**20:.0f} MiB, peak RSS {warm_rss} MiB")
        print(f"image build kernel+initrd, cold     {cold:7.1f} s  ratio {cold / warm:.2f}x of warm, peak RSS {cold_rss} MiB")

        # -- boot to the first onboot marker ------------------------------------------
        minimal = pkgset.root / "examples/minimal.yml"
        full_minimal = work / "minimal-full.yml"
        full_minimal.write_text(minimal.read_text().replace(pkgset.kernel_ref, full_kernel))
        for arch in pkgsetkit.ARCHES:
            image_build(minimal, cache=cache, out=work / f"boot-{arch}", fmt="kernel+initrd", arch=arch)
            seconds = boot_to_marker(work / f"boot-{arch}" / "minimal", arch, f"PKGTOOL-MINIMAL-MARKER {UNAME[arch]}")
            print(f"boot to onboot marker, {arch:6}       {seconds:7.1f} s")
        image_build(full_minimal, cache=cache, out=work / "boot-full", fmt="kernel+initrd")
        seconds = boot_to_marker(work / "boot-full" / "minimal-full", "amd64", "PKGTOOL-MINIMAL-MARKER x86_64")
        print(f"boot to onboot marker, amd64, whole module tree {seconds:5.1f} s")


if __name__ == "__main__":
    main()
