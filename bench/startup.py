"""Startup benchmark: wall time of `pkgtool --version` and `pkgtool --help`.

Baseline in the same run: `python -c pass` with the same interpreter, so the ratio shows what
pkgtool itself adds.  Target: `pkgtool --version` under 0.15 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15


def timed(cmd: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    baseline = timed([sys.executable, "-c", "pass"])
    version = timed([sys.executable, "-m", "pkgtool", "--version"])
    helptext = timed([sys.executable, "-m", "pkgtool", "--help"])
    print(f"python -c pass       {baseline * 1000:7.1f} ms (baseline)")
    print(f"pkgtool --version    {version * 1000:7.1f} ms  ratio {version / baseline:.2f}x  target < 150 ms")
    print(f"pkgtool --help       {helptext * 1000:7.1f} ms  ratio {helptext / baseline:.2f}x")


if __name__ == "__main__":
    main()
