"""Package-build benchmarks against the real stack (`scripts/stack up` first).

Four measurements, each with its baseline taken in the same run:

* **no-op**: ``pkgtool build`` of a package whose tag is already in the registry, median
  wall time, as a ratio of ``pkgtool --version`` (target: under 0.5 s);
* **three arches**: one ``pkgtool build`` for amd64+arm64+s390x, wall time, as a ratio of
  the sum of three single-arch builds of the same package (``--platforms``); the package's
  RUN step does real CPU work under emulation and ``disable-cache`` makes every run do it;
* **context transfer**: bytes of build context BuildKit asked for on a first build (50 MB
  of files) and on a second one after changing one small file (target: the second sends
  only that file);
* **registry cache**: a package (a CPU-heavy emulated arm64 RUN) rebuilt by a builder whose
  local BuildKit cache was just emptied, with ``--cache-from`` a warm registry cache, as a
  ratio of the same rebuild without it (target: at most 0.3x).  The builder is a second,
  throw-away dockerd (tests/dockerdkit.py), so the stack's cache is never pruned.

    python bench/build.py          # all four
    python bench/build.py cache    # only the registry cache case
"""

from __future__ import annotations

import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import basekit
import dockerdkit

from pkgtool import settings
from pkgtool.pkgbuild.api import execute, make_plan
from pkgtool.pkgbuild.cache import parse_cache_location
from pkgtool.pkgbuild.plan import BuildOptions
from pkgtool.progress import Progress

RUNS = 9
CACHE_RUNS = 3


def pkgtool(*args: str, cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pkgtool", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def package(root: Path, name: str, dockerfile: str, build_yml: str = "") -> Path:
    directory = root / "pkg" / name
    directory.mkdir(parents=True)
    org = f"pkgtool-bench/{secrets.token_hex(4)}"
    (directory / "build.yml").write_text(f"image: {name}\norg: {org}\n{build_yml}")
    (directory / "Dockerfile").write_text(dockerfile)
    return directory


def build(directory: Path, cache: Path, **options: object) -> list[object]:
    opts = BuildOptions(registry=settings.registry(), **options)  # type: ignore[arg-type]
    plan = make_plan([directory], opts, cache_dir=cache)
    with open(os.devnull, "w") as sink, Progress("plain", stream=sink) as progress:
        return list(execute(plan, progress=progress))


def main() -> None:
    base = basekit.push_busybox_base(settings.registry())
    head = f"ARG PKGTOOL_REGISTRY=127.0.0.1:5000\nFROM {base.pinned('${PKGTOOL_REGISTRY}')} AS build\n"
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-") as tmp:
        root = Path(tmp)
        (root / "pkg").mkdir()
        cache = root / "cache"

        # -- no-op ---------------------------------------------------------------------
        noop = package(root, "noop", head + "RUN mkdir /out && uname -m > /out/arch\nFROM scratch\nCOPY --from=build /out/ /\n")
        build(noop, cache)
        version = statistics.median(pkgtool("--version", cwd=root) for _ in range(RUNS))
        skip = statistics.median(pkgtool("build", "pkg/noop", cwd=root) for _ in range(RUNS))
        print(f"pkgtool --version                  {version * 1000:7.0f} ms (baseline)")
        print(f"pkgtool build (no-op, up to date)  {skip * 1000:7.0f} ms  ratio {skip / version:.2f}x  target < 500 ms")

        # -- three arches in parallel vs one after another -----------------------------
        work = head + ("RUN mkdir /out && i=0 && while [ $i -lt 400000 ]; do i=$((i+1)); done && uname -m > /out/arch\n"
                       "FROM scratch\nCOPY --from=build /out/ /\n")
        cpu = package(root, "cpu", work, "disable-cache: true\n")
        singles = {}
        for arch in ("amd64", "arm64", "s390x"):
            start = time.perf_counter()
            build(cpu, cache, platforms=(arch,), force=True)
            singles[arch] = time.perf_counter() - start
        start = time.perf_counter()
        build(cpu, cache, force=True)
        parallel = time.perf_counter() - start
        total = sum(singles.values())
        print("single-arch builds                 " + ", ".join(f"{a} {t:.1f}s" for a, t in singles.items())
              + f"  sum {total:.1f}s (baseline)")
        print(f"three-arch build (parallel)        {parallel:7.1f} s  ratio {parallel / total:.2f}x of the sum "
              f"({os.cpu_count()} cores)")

        # -- context transfer ----------------------------------------------------------
        ctx = package(root, "ctx", "FROM scratch\nCOPY . /ctx/\n", "arches: [amd64]\n")
        for i in range(50):
            (ctx / f"blob{i:02d}.bin").write_bytes(os.urandom(1 << 20))
        (ctx / "small.txt").write_text("one\n")
        first = build(ctx, cache)
        (ctx / "small.txt").write_text("two\n")
        second = build(ctx, cache)
        sent = [r.arch_builds["amd64"].bytes_sent for r in (*first, *second)]  # type: ignore[attr-defined]
        print(f"context sent, first build          {sent[0]:>12,} bytes (baseline: 50 MiB of files)")
        print(f"context sent, one file changed     {sent[1]:>12,} bytes  ratio {sent[1] / max(sent[0], 1):.6f}x")

        # -- registry cache ------------------------------------------------------------
        registry_cache(root, head, cache)


def registry_cache(root: Path, head: str, cache: Path) -> None:
    """Rebuilds on an emptied builder: with --cache-from a warm registry cache vs without."""
    work = head + ("RUN mkdir /out && i=0 && while [ $i -lt 400000 ]; do i=$((i+1)); done && uname -m > /out/arch\n"
                   "FROM scratch\nCOPY --from=build /out/ /\n")
    directory = package(root, "cached", work, "arches: [arm64]\n")
    location = parse_cache_location(f"{settings.registry()}/pkgtool-bench/cache-{secrets.token_hex(4)}",
                                    flag="--cache-to", default_registry=settings.registry())
    with dockerdkit.running() as daemon:
        builder = {"builder": f"docker://{daemon.host}", "builders": {}}
        build(directory, cache, cache_to=location, **builder)  # warms the registry cache
        timings: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(CACHE_RUNS):
            for case, extra in (("without", {}), ("with", {"cache_from": (location,)})):
                daemon.prune_build_cache()
                start = time.perf_counter()
                build(directory, cache, force=True, **builder, **extra)
                timings[case].append(time.perf_counter() - start)
    without, warm = statistics.median(timings["without"]), statistics.median(timings["with"])
    print(f"rebuild on an emptied builder      {without:7.1f} s (baseline, median of {CACHE_RUNS})")
    print(f"  ... with --cache-from (registry) {warm:7.1f} s  ratio {warm / without:.2f}x  target <= 0.3x")


def cache_only() -> None:
    base = basekit.push_busybox_base(settings.registry())
    head = f"ARG PKGTOOL_REGISTRY=127.0.0.1:5000\nFROM {base.pinned('${PKGTOOL_REGISTRY}')} AS build\n"
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-") as tmp:
        (Path(tmp) / "pkg").mkdir()
        registry_cache(Path(tmp), head, Path(tmp) / "cache")


if __name__ == "__main__":
    cache_only() if sys.argv[1:] == ["cache"] else main()
