"""Pull throughput: pkgtool's transfer.pull into an empty cache versus curl, same blobs, same run.

Pushes a ~200 MB image of random (incompressible) layers to the local registry once per
run, then times:

* ``pkgtool``: ``transfer.pull`` into a fresh, empty layout cache (parallel, hashing every
  byte, atomic renames, fsync);
* ``curl``: the same manifest and blobs fetched one after another into files.

Prints both wall times, MB/s and the ratio (pkgtool time / curl time; below 1 is faster).
Run: ``python bench/pull_throughput.py [--registry 127.0.0.1:5000] [--mb 200] [--layers 5]``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pkgtool import settings
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.layout import Layout
from pkgtool.oci.manifest import build_manifest
from pkgtool.oci.registry import RegistryClient
from pkgtool.oci.transfer import pull, push


def make_image(layout: Layout, *, total_mb: int, layers: int) -> Descriptor:
    per_layer = total_mb * 1024 * 1024 // layers
    descriptors = []
    for _ in range(layers):
        data = os.urandom(per_layer)
        layout.write_blob(data)
        descriptors.append(Descriptor.for_bytes(mt.OCI_LAYER, data))
    config = hashed_json({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [d.digest for d in descriptors]}})
    layout.write_blob(config)
    manifest = build_manifest(Descriptor.for_bytes(mt.OCI_CONFIG, config), descriptors)
    layout.write_blob(manifest)
    return Descriptor.for_bytes(mt.OCI_MANIFEST, manifest)


def curl_fetch(registry: str, repository: str, tag: str, blobs: list[Descriptor], out: Path) -> None:
    base = f"http://{registry}/v2/{repository}"
    subprocess.run(
        ["curl", "-sSf", "-o", str(out / "manifest"), "-H", f"Accept: {mt.MANIFEST_ACCEPT}",
         f"{base}/manifests/{tag}"], check=True,
    )
    for blob in blobs:
        subprocess.run(
            ["curl", "-sSfL", "-o", str(out / blob.digest.removeprefix("sha256:")), f"{base}/blobs/{blob.digest}"],
            check=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", default=settings.registry())
    parser.add_argument("--mb", type=int, default=200, help="image size in MB (default 200)")
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each; best is reported")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is not installed", file=sys.stderr)
        return 2

    client = RegistryClient(args.registry)
    repository = f"pkgtool-bench/pull-{secrets.token_hex(4)}"
    ref = f"{args.registry}/{repository}:bench"
    with tempfile.TemporaryDirectory(prefix="pkgtool-bench-") as tmp:
        work = Path(tmp)
        source = Layout(work / "source")
        source.ensure()
        image = make_image(source, total_mb=args.mb, layers=args.layers)
        push(client, source, image, ref)
        blobs = source.children(image)
        total = sum(b.size for b in blobs) + image.size
        shutil.rmtree(work / "source")  # keep the page cache honest-ish and the disk free

        pkgtool_times, curl_times = [], []
        for round_no in range(args.rounds):
            # Alternate the order so neither side always gets the warmer registry cache.
            for side in (("pkgtool", "curl") if round_no % 2 == 0 else ("curl", "pkgtool")):
                target = work / f"{side}-{round_no}"
                if side == "pkgtool":
                    started = time.perf_counter()
                    pull(client, ref, Layout(target))
                    pkgtool_times.append(time.perf_counter() - started)
                else:
                    target.mkdir()
                    started = time.perf_counter()
                    curl_fetch(args.registry, repository, "bench", blobs, target)
                    curl_times.append(time.perf_counter() - started)
                shutil.rmtree(target)

    best_pkgtool, best_curl = min(pkgtool_times), min(curl_times)
    mb = total / 1e6
    print(f"image: {mb:.0f} MB in {len(blobs)} blobs from {args.registry}")
    print(f"pkgtool pull (empty cache, {args.rounds} rounds, best): {best_pkgtool:.2f} s  {mb / best_pkgtool:.0f} MB/s")
    print(f"curl, sequential to files (best):                 {best_curl:.2f} s  {mb / best_curl:.0f} MB/s")
    print(f"ratio pkgtool/curl time: {best_pkgtool / best_curl:.2f}  (throughput {best_curl / best_pkgtool:.2f}x curl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
