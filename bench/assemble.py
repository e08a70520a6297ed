"""OS-image assembly and boot benchmarks against the real stack (`scripts/stack up` first).

Every figure comes with its baseline, measured in the same run:

* **the heavy image**: examples/sshd.yml with Debian's *whole* module tree (the full kernel
  flavour, ~4,000 ``.ko`` files) and a 170 MB Debian service (the base image), amd64,
  ``--format kernel+initrd``, for gzip and for zstd initrds:
  - *cold*: an empty cache, so every blob is pulled, verified and every segment built;
  - *warm, nothing changed*: the median of a few rebuilds (target <= 0.05x cold);
  - *warm, one service changed*: a small service swapped for another image each run
    (target <= 0.25x cold);
  - the *floors*: ``gzip -6`` and ``zstd -T0 -3`` over the same uncompressed cpio (the
    initrd's archives, decompressed), and the time to pull the image's blobs into an empty
    cache; targets: cold gzip <= 0.6x the gzip floor, cold zstd <= 1.5x (zstd floor +
    pull);
  - peak RSS of every build (``wait4``);
* **the small image**: examples/minimal.yml (the VM kernel, init, runc, one small service)
  built cold, against ``pkgtool --version`` (target <= 4x);
* **boot**: seconds from starting ``pkgtool run qemu`` to the onboot marker of
  examples/minimal.yml on each arch (bench/boot.py breaks boots into phases against a
  floor).

    python bench/assemble.py [--no-boot]

The package set and kernels come from tests/pkgsetkit.py (built, or found in the registry
at their content-hash tags), so the figures are for the repository as committed.
"""

from __future__ import annotations

import compileall
import dataclasses
import hashlib
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


# Runs one command and reports its wall time and peak RSS.  A child forked from this
# process starts with this process's high-water RSS (Linux keeps it across fork and exec), and
# this process grows (the base build, comparing outputs), so every measured command is
# started from this small, fresh interpreter instead.
_RUNNER = """
import os, subprocess, sys, time
shell = sys.argv[1] == "shell"
start = time.perf_counter()
proc = subprocess.Popen(" ".join(sys.argv[2:]) if shell else sys.argv[2:], shell=shell, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def timed(argv: list[str], *, cwd: Path | None = None, shell: bool = False) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one command (and what it waited for)."""
    done = subprocess.run([sys.executable, "-c", _RUNNER, "shell" if shell else "argv", *argv], cwd=cwd,
                          capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"{' '.join(argv)}: the runner failed: {done.stderr[-2000:]}")
    seconds, max_rss_kib, code = done.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    return float(seconds), int(max_rss_kib) // 1024


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


def small_service(registry: str, n: int) -> str:
    """A new small service image (a static busybox and 1 MB of data unique to ``n``), pushed
    to the registry and pinned: what a maintainer's changed service looks like."""
    import imagekit

    from pkgtool.oci import mediatypes

    layer = imagekit.busybox_layer("amd64", [("srv/data", "file", os.urandom(1 << 20), 0o644),
                                             ("srv/n", "file", str(n).encode(), 0o644)])
    blobs, index = imagekit.image_blobs([layer], arch="amd64", config={"Cmd": ["/bin/sh"]})
    repository = "pkgtool-bench/extra"
    manifest = ("", b"")
    with RegistryClient(registry) as client:
        for digest, data in blobs.items():
            if digest == index.digest:
                continue
            if data[:1] == b"{" and b'"mediaType":"' + mediatypes.OCI_MANIFEST.encode() in data:
                manifest = (digest, data)
            else:
                client.push_blob_bytes(repository, data)
        client.put_manifest(repository, manifest[0], manifest[1], mediatypes.OCI_MANIFEST)
        client.put_manifest(repository, f"n{n}", blobs[index.digest], mediatypes.OCI_INDEX)
    return f"{registry}/{repository}:n{n}@{index.digest}"


def debian_image(pkgset: pkgsetkit.PackageSet) -> str:
    """The Debian base image (about 170 MB a arch) as a pinned reference."""
    from pkgtool.base.base_build import build_base
    from pkgtool.base.recipe import load_recipe

    result = build_base(load_recipe(pkgset.root / "pkg" / "base" / "base.yml"), registry=pkgset.registry)
    return f"{result.ref}@{result.index_digest}"


def heavy_yaml(pkgset: pkgsetkit.PackageSet, full_kernel: str, extra: str, dest: Path) -> Path:
    """The heavy image with ``extra`` (a pinned reference) as its small, changing service."""
    text = (pkgset.root / "examples/sshd.yml").read_text().replace(pkgset.kernel_ref, full_kernel)
    assert full_kernel in text, "examples/sshd.yml does not pin the package set's kernel"
    text += (f"  - name: debian\n    image: {debian_image(pkgset)}\n    command: [/bin/sleep, infinity]\n"
             f"  - name: extra\n    image: {extra}\n")
    dest.write_text(text)
    return dest


def uncompressed(initrd: Path, dest: Path) -> Path:
    """The initrd's archives, decompressed and concatenated (what the floors compress)."""
    with initrd.open("rb") as f:
        tool = "zstd" if f.read(4) == b"\x28\xb5\x2f\xfd" else "gzip"
    with dest.open("wb") as out:
        subprocess.run([tool, "-dc", str(initrd)], stdout=out, check=True)
    return dest


def pull_seconds(yaml: Path, work: Path) -> float:
    """Wall time to pull the image's blobs (its arch) into an empty cache."""
    code = ("import sys\nfrom pathlib import Path\n"
            "from pkgtool.assemble.images import pull_all\nfrom pkgtool.oci.layout import Layout\n"
            "from pkgtool.oci.registry import RegistryClient\nfrom pkgtool.oci.source import CachedSource\n"
            "from pkgtool.spec.image import image_references, load_image_spec\n"
            "refs = [r for _, r in image_references(load_image_spec([Path(sys.argv[1])]))]\n"
            "pull_all(refs, CachedSource(Layout(Path(sys.argv[2])), RegistryClient), 'amd64', progress=lambda m: None)\n")
    return timed([sys.executable, "-c", code, str(yaml), str(work)])[0]


def heavy(pkgset: pkgsetkit.PackageSet, full_kernel: str, work: Path, compression: str) -> None:
    base = work / compression
    base.mkdir()
    cache = base / "cache"
    stamp = time.time_ns()  # new service images for every run of the benchmark
    reference = heavy_yaml(pkgset, full_kernel, small_service(pkgset.registry, stamp), base / "heavy.yml")

    def build(yaml: Path, out: str) -> tuple[float, int]:
        return timed([sys.executable, "-m", "pkgtool", "--cache-dir", str(cache), "image", "build", str(yaml),
                      "--format", "kernel+initrd", "--initrd-compression", compression, "--dir", str(base / out)])

    cold, cold_rss = build(reference, "cold")
    warm_runs = [build(reference, f"warm{i}") for i in range(RUNS)]
    changed = [heavy_yaml(pkgset, full_kernel, small_service(pkgset.registry, stamp + i + 1), base / f"changed{i}.yml")
               for i in range(RUNS)]
    changed_runs = [build(yaml, f"changed{i}") for i, yaml in enumerate(changed)]
    warm, one_changed = statistics.median(s for s, _ in warm_runs), statistics.median(s for s, _ in changed_runs)
    rss = max(r for _, r in [(cold, cold_rss), *warm_runs, *changed_runs])
    initrd = base / "cold" / "heavy-initrd.img"
    cpio = uncompressed(initrd, base / "initrd.cpio")
    floor_tool = ["gzip", "-6"] if compression == "gzip" else ["zstd", "-T0", "-3", "-q"]
    floor = statistics.median(timed([*floor_tool, "-c", str(cpio), ">", "/dev/null"], shell=True)[0]
                              for _ in range(RUNS))
    pull = pull_seconds(reference, base / "pull-cache")
    print(f"heavy image, {compression} initrd ({initrd.stat().st_size / 2**20:.0f} MiB from a "
          f"{cpio.stat().st_size / 2**20:.0f} MiB cpio), peak RSS {rss} MiB")
    print(f"  cold                         {cold:6.2f} s")
    print(f"  warm, nothing changed        {warm:6.2f} s   {warm / cold:.3f}x cold   target <= 0.05")
    print(f"  warm, one service changed    {one_changed:6.2f} s   {one_changed / cold:.3f}x cold   target <= 0.25")
    if compression == "gzip":
        print(f"  floor: gzip -6 of the cpio   {floor:6.2f} s   cold is {cold / floor:.2f}x the floor   target <= 0.6")
    else:
        print(f"  floor: zstd -T0 -3 of the cpio {floor:4.2f} s + pulling the blobs {pull:.2f} s = {floor + pull:.2f} s;"
              f" cold is {cold / (floor + pull):.2f}x   target <= 1.5")
    for run in ("cold", *(f"warm{i}" for i in range(RUNS))):
        assert file_digest(base / run / "heavy-initrd.img") == file_digest(initrd), f"{run} differs from cold"


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def small(pkgset: pkgsetkit.PackageSet, work: Path) -> None:
    minimal = pkgset.root / "examples/minimal.yml"
    version = statistics.median(timed([sys.executable, "-m", "pkgtool", "--version"])[0] for _ in range(5))
    colds = [timed([sys.executable, "-m", "pkgtool", "--cache-dir", str(work / f"small-cache{i}"), "image", "build",
                    str(minimal), "--dir", str(work / f"small{i}")])[0] for i in range(RUNS)]
    cold = statistics.median(colds)
    print(f"small image (minimal.yml: VM kernel, init, runc, one service), cold  {cold:5.2f} s; "
          f"pkgtool --version {version:.3f} s; ratio {cold / version:.1f}x   target <= 4")


def main() -> None:
    registry = settings.registry()
    # Byte-compile pkgtool as `pip install` does: with PYTHONDONTWRITEBYTECODE set (CI images
    # often set it) every run would otherwise compile pkgtool's modules again, ~70 ms that a
    # user never pays, and `--version` (two modules) would not.
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent / "pkgtool"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-") as tmp:
        work = Path(tmp)
        print("publishing the package set (a no-op when the registry has it) ...", file=sys.stderr)
        pkgset = pkgsetkit.publish(registry, work)
        full_kernel = full_module_kernel(pkgset)
        for compression in ("gzip", "zstd"):
            heavy(pkgset, full_kernel, work, compression)
        small(pkgset, work)
        if "--no-boot" in sys.argv:
            return

        # -- boot to the first onboot marker ------------------------------------------
        minimal = pkgset.root / "examples/minimal.yml"
        cache = work / "boot-cache"
        for arch in pkgsetkit.ARCHES:
            subprocess.run([sys.executable, "-m", "pkgtool", "--cache-dir", str(cache), "image", "build", str(minimal),
                            "--arch", arch, "--dir", str(work / f"boot-{arch}")], check=True, capture_output=True)
            seconds = boot_to_marker(work / f"boot-{arch}" / "minimal", arch, f"PKGTOOL-MINIMAL-MARKER {UNAME[arch]}")
            print(f"boot to onboot marker, {arch:6}       {seconds:7.1f} s")


if __name__ == "__main__":
    main()
