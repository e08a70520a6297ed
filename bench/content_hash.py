"""Benchmark: pkgtool's content hash vs `git add -A && git write-tree` on the same tree.

Generates a package of 20,000 files (~300 MB; sizes from 1 KiB to a few MiB, random
bytes so neither side gets compression for free) in a temp dir, then times, in one run:

* git:   ``git init && git add -A && git write-tree`` (what LinuxKit's tag costs);
* cold:  ``pkgtool.hashing.content_hash`` with an empty stat cache;
* warm:  the same again with the stat cache filled (nothing changed);
* one:   warm, after touching one file's content.

Prints the times and the ratios to git (target: cold <= 1.0).

    python bench/content_hash.py [--files 20000] [--megabytes 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pkgtool.hashing import content_hash
from pkgtool.spec.package import load_package


def generate(root: Path, *, files: int, total_bytes: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    # A few large files carry most of the bytes, as in real packages (tarballs, binaries).
    weights = [rng.paretovariate(1.2) for _ in range(files)]
    scale = total_bytes / sum(weights)
    pool = os.urandom(64 << 20)
    (root / "build.yml").write_text("image: bench\n")
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    for i in range(files):
        directory = root / f"d{i % 97:02d}" / f"s{i % 13}"
        directory.mkdir(parents=True, exist_ok=True)
        size = max(1024, min(int(weights[i] * scale), len(pool)))
        start = rng.randrange(0, len(pool) - size + 1)
        path = directory / f"f{i:05d}.bin"
        path.write_bytes(pool[start:start + size])
        if i % 10 == 0:
            path.chmod(0o755)


def timed(label: str, fn: object) -> float:
    assert callable(fn)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"  {label:<28} {elapsed:8.3f} s", flush=True)
    return elapsed


def git_tree(root: Path) -> None:
    env = dict(os.environ, GIT_DIR=str(root.parent / "bench.git"), GIT_WORK_TREE=str(root))
    shutil.rmtree(env["GIT_DIR"], ignore_errors=True)
    for args in (["init", "-q"], ["add", "-A"], ["write-tree"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=300)
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="pkgtool-bench-hash-"))
    try:
        root = work / "pkg"
        cache = work / "statcache"
        if not (root / "build.yml").exists():
            root.mkdir(parents=True, exist_ok=True)
            print(f"generating {args.files} files, {args.megabytes} MB in {root} ...", flush=True)
            generate(root, files=args.files, total_bytes=args.megabytes << 20)
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        print(f"tree: {args.files} files, {size / 1e6:.0f} MB")
        # Same page-cache state for everyone: read the tree once before timing anything.
        for f in root.rglob("*.bin"):
            f.read_bytes()
        # Files written just now are "racy" for the stat cache (see pkgtool.hashing); age
        # them as they would be in a real checkout.
        old = time.time() - 3600
        for f in root.rglob("*"):
            os.utime(f, (old, old), follow_symlinks=False)
        time.sleep(2.1)  # ctime is now: wait out the cache's "racy" window
        spec = load_package(root)

        git = timed("git add -A && write-tree", lambda: git_tree(root))
        shutil.rmtree(cache, ignore_errors=True)
        cold = timed("pkgtool hash (cold)", lambda: content_hash(spec, stat_cache_dir=cache))
        warm = timed("pkgtool hash (warm cache)", lambda: content_hash(spec, stat_cache_dir=cache))
        one = next(root.rglob("*.bin"))
        one.write_bytes(one.read_bytes()[::-1])
        changed = timed("pkgtool hash (1 file changed)", lambda: content_hash(spec, stat_cache_dir=cache))
        print(f"ratio cold/git:    {cold / git:.3f}   (target <= 1.0)")
        print(f"ratio warm/git:    {warm / git:.3f}")
        print(f"ratio 1-change/git: {changed / git:.3f}")
        return 0 if cold <= git else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
