"""Walking, checking and collecting the layout cache: what is reachable, how big an image
is, whether every blob is sound, and garbage collection.

Safety against concurrent processes (see :mod:`pkgtool.oci.layout`): :func:`gc` and
:func:`clear` hold the index lock exclusively from their first look to their last unlink,
while writers publish blobs under the shared lock, so gc never deletes a blob an ingest has
just claimed; blobs younger than a grace period are kept for processes that have ingested
them but not tagged them yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from pkgtool.errors import CacheError, PkgtoolError
from pkgtool.fileio import TEMP_PREFIX
from pkgtool.jsonio import load_object
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.layout import HEX_RE, MAX_MANIFEST_BYTES, Layout, read_chunks

# Blobs younger than this are never collected: another process may have just ingested
# them and not tagged them yet.  A pull of a big image takes well under this.
DEFAULT_GC_GRACE_SECONDS = 600.0
# Temp files this old belong to a process that died mid-write.
STALE_TEMP_SECONDS = 24 * 3600.0
# Layers a registry may legitimately never serve (Windows base layers); missing is fine.
_OPTIONAL_MEDIA_MARKERS = ("foreign", "nondistributable")


def children(layout: Layout, descriptor: Descriptor) -> list[Descriptor]:
    """Descriptors a manifest or index blob refers to (config, layers, manifests).

    ``subject`` is deliberately not followed: a signature does not own its image.
    """
    if descriptor.media_type not in mediatypes.ALL_MANIFEST_TYPES:
        return []
    doc = _parse_manifest(layout, descriptor)
    raw: list[Any] = []
    if descriptor.media_type in mediatypes.INDEX_TYPES:
        raw = list(doc.get("manifests") or [])
    else:
        if "config" in doc:
            raw.append(doc["config"])
        raw.extend(doc.get("layers") or [])
    try:
        return [Descriptor.from_json(item) for item in raw]
    except PkgtoolError as exc:
        raise CacheError(f"corrupt manifest {descriptor.digest} in {layout.root}: {exc}") from None

def _parse_manifest(layout: Layout, descriptor: Descriptor) -> dict[str, Any]:
    data = layout.read_blob(descriptor.digest, max_size=MAX_MANIFEST_BYTES)
    return load_object(data, what=f"corrupt manifest {descriptor.digest} in {layout.root}: it", error=CacheError)

def _walk(layout: Layout, roots: Iterable[Descriptor], visit: Callable[[Descriptor], bool]) -> None:
    """Depth-first over the content graph, each digest once (so a self-referencing
    index terminates).  ``visit`` returns False to stop descending below a node."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        descriptor = stack.pop()
        if descriptor.digest in seen:
            continue
        seen.add(descriptor.digest)
        if visit(descriptor):
            stack.extend(children(layout, descriptor))

def reachable(layout: Layout, roots: Iterable[Descriptor] | None = None) -> set[str]:
    """Digests reachable from ``roots`` (default: everything in index.json)."""
    found: set[str] = set()

    def visit(descriptor: Descriptor) -> bool:
        found.add(descriptor.digest)
        return layout.has_blob(descriptor.digest)

    _walk(layout, layout.root_descriptors() if roots is None else roots, visit)
    return found

def size_of(layout: Layout, descriptor: Descriptor) -> int:
    """Bytes on disk of every blob reachable from ``descriptor``, each counted once."""
    total = 0

    def visit(d: Descriptor) -> bool:
        nonlocal total
        try:
            total += layout.blob_path(d.digest).stat().st_size
        except FileNotFoundError:
            return False
        return True

    _walk(layout, [descriptor], visit)
    return total

def verify(layout: Layout) -> list[str]:
    """Every problem in the cache, one line each; empty means healthy.

    Checks every blob's content against its name, then walks from index.json and
    reports referenced blobs that are missing, unparsable or of the wrong size.  An index's
    platform manifests may be missing: a pull for one arch keeps the index whole (its digest
    is the registry's) but fetches only that arch's image; what a present manifest names
    must all be there.
    """
    problems: list[str] = []
    corrupt: set[str] = set()
    for digest, _size in layout.iter_blobs():
        try:
            _hash_file(layout, digest)
        except CacheError as exc:
            corrupt.add(digest)
            problems.append(str(exc))
    try:
        roots = layout.root_descriptors()
    except CacheError as exc:
        return [*problems, str(exc)]

    partial: set[str] = set()  # platform manifests of an index, which a partial pull leaves out

    def visit(descriptor: Descriptor) -> bool:
        path = layout.blob_path(descriptor.digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            optional = any(m in descriptor.media_type for m in _OPTIONAL_MEDIA_MARKERS)
            if not optional and descriptor.digest not in partial:
                problems.append(f"missing blob {descriptor.digest} ({descriptor.media_type})")
            return False
        if descriptor.digest in corrupt:
            return False
        if size != descriptor.size:
            problems.append(
                f"blob {descriptor.digest}: {size} bytes on disk, descriptor says {descriptor.size}"
            )
        try:
            below = children(layout, descriptor)
        except CacheError as exc:
            problems.append(str(exc))
            return False
        if descriptor.media_type in mediatypes.INDEX_TYPES:
            partial.update(d.digest for d in below if d.media_type in mediatypes.ALL_MANIFEST_TYPES)
        return True

    _walk(layout, roots, visit)
    return problems


def _hash_file(layout: Layout, digest: str) -> None:
    path = layout.blob_path(digest)
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in read_chunks(f):
            hasher.update(chunk)
    actual = "sha256:" + hasher.hexdigest()
    if actual != digest:
        raise CacheError(f"corrupt blob {path}: content hashes to {actual}")

def gc(layout: Layout, *, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS) -> tuple[int, int]:
    """Delete blobs unreachable from index.json; returns (blobs removed, bytes freed).

    Runs under the index lock, so no tag can appear mid-way.  Blobs modified within
    ``grace_seconds`` are kept (another process may be about to tag them), and so are
    temp files of in-flight ingests unless they are a day old.  A manifest that cannot
    be read stops the gc: its children are unknown, so nothing is safe to delete.
    """
    if not layout.exists():
        return 0, 0
    with layout.locked():
        try:
            keep = reachable(layout)
        except CacheError as exc:
            raise CacheError(f"gc stopped, nothing deleted: {exc}") from None
        now = time.time()
        removed = freed = 0
        try:
            entries = list(os.scandir(layout.blobs_dir))
        except FileNotFoundError:
            return 0, 0
        # Leftovers of an index.json write that died before its rename.
        entries += [e for e in os.scandir(layout.root) if e.name.startswith(TEMP_PREFIX)]
        for entry in entries:
            is_blob = HEX_RE.match(entry.name) is not None
            if is_blob and "sha256:" + entry.name in keep:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            age = now - st.st_mtime
            if is_blob and age < grace_seconds:
                continue
            if not is_blob and not (entry.name.startswith(TEMP_PREFIX) and age > STALE_TEMP_SECONDS):
                continue  # not ours (or still being written): leave it alone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
                freed += st.st_size
        return removed, freed

def clear(layout: Layout) -> tuple[int, int]:
    """Remove every ref and every blob; returns (blobs removed, bytes freed).

    In-flight temp files are left to their writers: their rename still succeeds and
    gc collects the result later.
    """
    if not layout.exists():
        return 0, 0
    with layout.locked():
        removed = freed = 0
        for digest, size in list(layout.iter_blobs()):
            with contextlib.suppress(FileNotFoundError):
                layout.blob_path(digest).unlink()
                removed += 1
                freed += size
        layout.write_empty_index()
        return removed, freed
