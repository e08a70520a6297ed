"""Several processes hammer one cache at once; afterwards it must be intact blob by blob.

This is the failure LinuxKit's cache had: parallel builds corrupted its OCI layout.  Four
writer processes each store 50 images.  Every image shares a base layer with all the others
and a second layer with the same-numbered image of every other writer (so the same blob is
written by four processes at the same moment), and has one layer of its own.  All writers
tag the same shared names and fight over a few index refs, while a fifth process runs gc and
reads index.json in a loop.  Old unreferenced blobs are seeded first: gc must delete the
pure garbage, yet must not delete the ones the writers are re-ingesting meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from pkgtool.fileio import TEMP_PREFIX
from pkgtool.jsonio import hashed_json
from pkgtool.oci import layout_gc
from pkgtool.oci import mediatypes as mt
from pkgtool.oci.descriptor import Descriptor, sha256_digest
from pkgtool.oci.layout import Layout

pytestmark = pytest.mark.integration

WRITERS = 4
IMAGES = 50
CONTESTED_INDEXES = 3


def blob(label: str, size: int) -> bytes:
    """Deterministic content, so every process builds byte-identical shared blobs."""
    seed = hashlib.sha256(label.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def image_blobs(writer: int | None, i: int) -> tuple[list[bytes], bytes, bytes]:
    """(layers, config, manifest) of image ``i``; ``writer=None`` is the shared variant."""
    own = f"own-{writer}-{i}" if writer is not None else f"own-shared-{i}"
    layers = [blob("base", 300_000), blob(f"shared-{i}", 20_000 + 997 * i), blob(own, 5_000 + 31 * i)]
    config = hashed_json({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer) for layer in layers]},
    })
    manifest = hashed_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mt.OCI_CONFIG, config).to_json(),
        "layers": [Descriptor.for_bytes(mt.OCI_LAYER_GZIP, layer).to_json() for layer in layers],
    })
    return layers, config, manifest


def store_image(layout: Layout, layers: list[bytes], config: bytes, manifest: bytes) -> Descriptor:
    for layer in layers:
        # Streamed in small chunks, as a registry download would arrive.
        chunks = (layer[k:k + 8192] for k in range(0, len(layer), 8192))
        layout.ingest(chunks, expected_digest=sha256_digest(layer), expected_size=len(layer))
    layout.write_blob(config)
    layout.write_blob(manifest, expected_digest=sha256_digest(manifest))
    return Descriptor.for_bytes(mt.OCI_MANIFEST, manifest)


def writer_main(root: str, writer: int, start: Any, errors: Any) -> None:
    try:
        layout = Layout(Path(root))
        start.wait()
        layout.ensure()
        previous: Descriptor | None = None
        for i in range(IMAGES):
            shared = store_image(layout, *image_blobs(None, i))
            layout.tag(f"127.0.0.1:5000/shared/img:{i}", shared)
            own = store_image(layout, *image_blobs(writer, i))
            layout.tag(f"127.0.0.1:5000/w{writer}/img:{i}", own)
            if i % 10 == 9:
                layout.untag(f"127.0.0.1:5000/w{writer}/img:{i}")  # the gc process may reap it
            if previous is not None and i % 5 == 0:
                index = hashed_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                        "manifests": [previous.to_json(), own.to_json()]})
                layout.write_blob(index)
                layout.tag(f"contested:{i % CONTESTED_INDEXES}", Descriptor.for_bytes(mt.OCI_INDEX, index))
            previous = own
    except BaseException:
        errors.put(f"writer {writer}: {traceback.format_exc()}")
        raise


def gc_reader_main(root: str, start: Any, done: Any, errors: Any, stats: Any) -> None:
    try:
        layout = Layout(Path(root))
        start.wait()
        rounds = 0
        while not done.is_set() or rounds < 3:
            layout_gc.gc(layout)
            # Readers take no lock: index.json must always be a whole, valid file.
            index = json.loads((Path(root) / "index.json").read_bytes())
            assert isinstance(index["manifests"], list)
            for name, descriptor in layout.list_refs():
                if name.startswith("127.0.0.1:5000/shared/"):
                    assert layout.read_blob(descriptor.digest) is not None
            rounds += 1
        stats.put(rounds)
    except BaseException:
        errors.put(f"gc/reader: {traceback.format_exc()}")
        raise


def test_concurrent_writers_never_corrupt_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    layout = Layout(root)
    layout.ensure()
    # Old, unreferenced blobs: garbage, and blobs the writers are about to ingest again.
    garbage = [layout.write_blob(blob(f"garbage-{k}", 4096)) for k in range(20)]
    reused = [layout.write_blob(blob("base", 300_000))]
    reused += [layout.write_blob(image_blobs(None, i)[0][1]) for i in range(0, IMAGES, 2)]
    past = time.time() - 3600
    for digest in garbage + reused:
        os.utime(layout.blob_path(digest), (past, past))

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(WRITERS + 1)
    done = ctx.Event()
    errors = ctx.Queue()
    stats = ctx.Queue()
    writers = [ctx.Process(target=writer_main, args=(str(root), w, start, errors)) for w in range(WRITERS)]
    gc_proc = ctx.Process(target=gc_reader_main, args=(str(root), start, done, errors, stats))
    for proc in [*writers, gc_proc]:
        proc.start()
    for proc in writers:
        proc.join(timeout=180)
    done.set()
    gc_proc.join(timeout=60)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [p.exitcode for p in [*writers, gc_proc]] == [0] * (WRITERS + 1)
    assert stats.get(timeout=5) >= 3  # gc really ran alongside the writers

    # index.json: valid JSON with exactly the expected refs, each pointing at the right bytes.
    index = json.loads((root / "index.json").read_bytes())
    names = sorted(e["annotations"]["org.opencontainers.image.ref.name"] for e in index["manifests"])
    expected = {f"127.0.0.1:5000/shared/img:{i}": sha256_digest(image_blobs(None, i)[2]) for i in range(IMAGES)}
    for w in range(WRITERS):
        for i in range(IMAGES):
            if i % 10 != 9:
                expected[f"127.0.0.1:5000/w{w}/img:{i}"] = sha256_digest(image_blobs(w, i)[2])
    contested = [f"contested:{k}" for k in range(CONTESTED_INDEXES)]
    assert names == sorted([*expected, *contested])
    for name, digest in expected.items():
        descriptor = layout.resolve(name)
        assert descriptor is not None and descriptor.digest == digest, name
    for name in contested:
        descriptor = layout.resolve(name)
        assert descriptor is not None and descriptor.media_type == mt.OCI_INDEX
        assert len(layout_gc.children(layout, descriptor)) == 2

    # Blob by blob: every file hashes to its name, every referenced blob is present.
    assert layout_gc.verify(layout) == []
    for digest, _size in layout.iter_blobs():
        assert hashlib.sha256(layout.blob_path(digest).read_bytes()).hexdigest() == digest[7:]
    assert not any(p.name.startswith(TEMP_PREFIX) for p in root.rglob("*"))
    assert not any(layout.has_blob(d) for d in garbage)
    assert all(layout.has_blob(d) for d in reused)

    # Everything still tagged is complete: a gc without grace keeps all of it.
    layout_gc.gc(layout, grace_seconds=0)
    assert layout_gc.verify(layout) == []
    for name in expected:
        assert layout_gc.size_of(layout, layout.resolve(name)) > 300_000  # type: ignore[arg-type]
