"""The local content store: an OCI image-layout directory that many processes share.

On disk it is a plain OCI image layout (image-spec ``image-layout.md``), stored directly at
the cache root so other tools read it as is (``skopeo inspect oci:ROOT:REF``,
``umoci ls --layout ROOT``)::

    ROOT/oci-layout          {"imageLayoutVersion": "1.0.0"}
    ROOT/index.json          one manifest entry per ref, named by the annotation
                             org.opencontainers.image.ref.name
    ROOT/blobs/sha256/<hex>  content, named by its sha256
    ROOT/index.json.lock     flock target; serialises index.json read-modify-write and gc

Why it cannot be corrupted by concurrent pkgtool processes (LinuxKit's cache was):

* A blob is written to a temp file in ``blobs/sha256`` (same directory, so the rename
  cannot cross file systems), hashed while written, verified, fsynced and then renamed
  onto its name.  Readers see the old state or the whole blob, never a part.  Two
  processes writing the same blob both rename identical bytes onto the same name: both
  succeed.
* ``index.json`` is only changed inside an exclusive ``flock`` on ``index.json.lock``, as a
  read-modify-write, and is replaced by renaming a complete temp file over it.  Readers
  need no lock.
* ``gc`` holds the lock exclusively and only deletes blobs that are unreachable *and*
  older than a grace period.  Publishing a blob (the rename, or refreshing the mtime of a
  blob that is already there) holds it shared, so gc never deletes a blob an ingest has
  just claimed, and a process that has ingested blobs but not tagged them yet keeps
  them for the grace period.  ``tag`` checks under the lock that the tagged blob exists,
  so a lost race is an error, never a dangling ref.

Naming: refs are stored as given, e.g. ``127.0.0.1:5000/org/img:tag``.  skopeo and umoci
split ``oci:DIR:REF`` at the *first* colon, so such refs work as long as DIR itself has no
colon (``skopeo inspect oci:/var/cache/pkgtool:127.0.0.1:5000/org/img:tag``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pkgtool.errors import CacheError, DigestMismatchError, PkgtoolError
from pkgtool.fileio import TEMP_PREFIX, atomic_write, fsync_dir
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, check_digest
from pkgtool.oci.manifest import Manifest, parse_manifest
from pkgtool.oci.reference import Reference
from pkgtool.oci.referrers import fallback_tag
from pkgtool.oci.source import NotFoundError, manifest_media_type

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
LOCK_NAME = "index.json.lock"
# Every temp file pkgtool creates inside the layout starts with this, so gc and the
# "is this directory ours?" check can recognise them.
MAX_REF_NAME = 1024
# Manifests and indexes are parsed while walking; a huge "manifest" is not one.
MAX_MANIFEST_BYTES = mediatypes.MAX_MANIFEST_BYTES

HEX_RE = re.compile(r"^[a-f0-9]{64}$")
_CHUNK = 1024 * 1024


class Layout:
    """An OCI image layout at ``root``, safe to share between processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.index_path = self.root / "index.json"
        self.layout_path = self.root / "oci-layout"
        self.lock_path = self.root / LOCK_NAME

    def __repr__(self) -> str:
        return f"Layout({str(self.root)!r})"

    # ------------------------------------------------------------------ setup

    def exists(self) -> bool:
        """True if ``root`` holds an OCI layout (its ``oci-layout`` file)."""
        return self.layout_path.is_file()

    def ensure(self) -> None:
        """Create the layout if needed; idempotent and safe to race with other processes."""
        try:
            self._refuse_foreign_directory()
            self.root.mkdir(parents=True, exist_ok=True)
            if not self.layout_path.exists():
                marker = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
                atomic_write(self.layout_path, marker, mode=0o644)
            self._check_layout_version()
            self.blobs_dir.mkdir(parents=True, exist_ok=True)
            if not self.index_path.exists():
                with self.locked():
                    if not self.index_path.exists():
                        self._write_index(_empty_index())
        except OSError as exc:
            raise CacheError(f"cannot create cache at {self.root}: {_os_reason(exc)}") from None

    def _refuse_foreign_directory(self) -> None:
        # `--cache-dir ~` must not sprinkle oci-layout and blobs/ into someone's home.
        if not self.root.is_dir() or self.layout_path.exists():
            return
        ours = {"oci-layout", "index.json", "blobs", LOCK_NAME}
        foreign = [
            p.name for p in self.root.iterdir()
            if p.name not in ours and not p.name.startswith(TEMP_PREFIX)
        ]
        if foreign:
            raise CacheError(
                f"{self.root} is not empty and not an OCI layout (found {sorted(foreign)[0]!r}); "
                "choose another --cache-dir"
            )

    def _check_layout_version(self) -> None:
        try:
            marker = json.loads(self.layout_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise CacheError(f"{self.layout_path}: unreadable oci-layout file ({exc})") from None
        if not isinstance(marker, dict) or marker.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise CacheError(
                f"{self.layout_path}: unsupported imageLayoutVersion "
                f"{marker.get('imageLayoutVersion') if isinstance(marker, dict) else marker!r}"
            )

    # ------------------------------------------------------------------ blobs

    def blob_path(self, digest: str) -> Path:
        """Where the blob named ``digest`` lives.  Only ``sha256:<64 hex>`` is accepted,
        so a hostile digest string can never name a path outside ``blobs/sha256``."""
        try:
            check_digest(digest)
        except PkgtoolError as exc:
            raise CacheError(str(exc)) from None
        return self.blobs_dir / digest.removeprefix("sha256:")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob(self, data: bytes, *, expected_digest: str | None = None) -> str:
        """Store ``data``; returns its digest.  A given ``expected_digest`` must match."""
        return self._store([data], expected_digest=expected_digest, expected_size=len(data))

    def ingest(
        self,
        chunks: Iterable[bytes],
        *,
        expected_digest: str,
        expected_size: int | None = None,
    ) -> Path:
        """Stream ``chunks`` into the blob ``expected_digest`` and return its path.

        The content is hashed while written and only renamed into place once digest (and
        size, if given) match; on a mismatch :class:`DigestMismatchError` is raised and
        nothing is left behind.  More than ``expected_size`` bytes aborts early, so a
        hostile stream cannot fill the disk.
        """
        self._store(chunks, expected_digest=expected_digest, expected_size=expected_size)
        return self.blob_path(expected_digest)

    def ingest_file(self, path: Path, *, expected_digest: str | None = None) -> str:
        """Copy the file at ``path`` in as a blob; returns its digest.

        A copy, not a hardlink: a later edit of the source must not change a blob.
        """
        try:
            with open(path, "rb") as src:
                return self._store(read_chunks(src), expected_digest=expected_digest,
                                   expected_size=None)
        except FileNotFoundError:
            raise CacheError(f"cannot ingest {path}: no such file") from None
        except IsADirectoryError:
            raise CacheError(f"cannot ingest {path}: is a directory") from None

    def _store(
        self,
        chunks: Iterable[bytes],
        *,
        expected_digest: str | None,
        expected_size: int | None,
    ) -> str:
        if expected_digest is not None and self._claim_existing(expected_digest):
            # Verified when it was written; the fresh mtime protects it from a gc that
            # runs before our caller tags it.
            return expected_digest
        if expected_size is not None and expected_size < 0:
            raise CacheError(f"invalid expected size {expected_size}")
        self._require_blobs_dir()
        fd, tmp_name = _mkstemp(self.blobs_dir)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise DigestMismatchError(
                            f"blob {expected_digest or '(unnamed)'}: more than the expected "
                            f"{expected_size} bytes"
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                # Blobs are read by other users' tools too (skopeo, umoci); mkstemp gives 0600.
                os.fchmod(out.fileno(), 0o644)
                os.fsync(out.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected_size is not None and size != expected_size:
                raise DigestMismatchError(
                    f"blob {expected_digest or digest}: got {size} bytes, expected {expected_size}"
                )
            if expected_digest is not None and digest != expected_digest:
                raise DigestMismatchError(
                    f"blob {expected_digest}: content hashes to {digest}"
                )
            self._publish(tmp, digest)
            return digest
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _claim_existing(self, digest: str) -> bool:
        """If the blob is present, refresh its mtime and say so.

        Under the shared lock: gc holds it exclusively from its first stat to its last
        unlink, so it can never delete a blob between our check and our touch.
        """
        path = self.blob_path(digest)
        with self.locked(shared=True):
            try:
                os.utime(path)
            except FileNotFoundError:
                return False
            except PermissionError:
                pass  # someone else's blob in a shared cache: present is what matters
            return True

    def _publish(self, tmp: Path, digest: str) -> None:
        """Move a verified temp file onto its blob name (or drop it if already there).

        Under the shared lock for the same reason as :meth:`_claim_existing`: renaming a
        fresh file over an old one that gc has already decided to unlink would lose it.
        Writers only share the lock, so they never wait for each other here.
        """
        with self.locked(shared=True):
            target = self.blob_path(digest)
            try:
                os.utime(target)
            except FileNotFoundError:
                # Same-content renames are harmless: concurrent writers of one blob both win.
                os.replace(tmp, target)
                fsync_dir(self.blobs_dir)
            except PermissionError:
                pass
            tmp.unlink(missing_ok=True)

    def _require_blobs_dir(self) -> None:
        if not self.blobs_dir.is_dir():
            raise CacheError(f"no OCI layout at {self.root} (blobs/sha256 missing)")

    def read_blob(self, digest: str, *, max_size: int | None = None) -> bytes:
        """The blob's bytes, verified against its name (a corrupt blob is a CacheError)."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                if max_size is not None:
                    size = os.fstat(f.fileno()).st_size
                    if size > max_size:
                        raise CacheError(f"blob {digest} in {self.root} is {size} bytes, over {max_size}")
                data = f.read()
        except FileNotFoundError:
            raise CacheError(f"blob {digest} is not in the cache at {self.root}") from None
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CacheError(f"corrupt blob {path}: content hashes to {actual}")
        return data

    def open_blob(self, digest: str) -> BinaryIO:
        """A reader for the blob that verifies its digest when it reaches the end.

        Raises :class:`CacheError` from ``read`` at EOF if the content does not match, so
        a consumer that reads to the end never silently accepts a corrupt blob.
        """
        path = self.blob_path(digest)
        try:
            raw = open(path, "rb", buffering=0)  # noqa: SIM115 - handed to the caller
        except FileNotFoundError:
            raise CacheError(f"blob {digest} is not in the cache at {self.root}") from None
        return io.BufferedReader(_VerifyingReader(raw, digest=digest, path=path))

    def iter_blobs(self) -> Iterator[tuple[str, int]]:
        """(digest, size on disk) of every complete blob; temp files and strays skipped."""
        try:
            entries = list(os.scandir(self.blobs_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if not HEX_RE.match(entry.name):
                continue
            try:
                yield "sha256:" + entry.name, entry.stat().st_size
            except FileNotFoundError:
                continue  # collected meanwhile

    # ------------------------------------------------------------------ index.json

    def read_index(self) -> dict[str, Any]:
        """The parsed ``index.json`` (an empty index if there is none yet).

        No lock needed: it is only ever replaced by rename, so this sees a whole file.
        """
        try:
            raw = self.index_path.read_bytes()
        except FileNotFoundError:
            return _empty_index()
        except OSError as exc:
            raise CacheError(f"cannot read {self.index_path}: {_os_reason(exc)}") from None
        try:
            index = json.loads(raw)
        except ValueError as exc:
            raise CacheError(f"corrupt {self.index_path}: not valid JSON ({exc})") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests", []), list):
            raise CacheError(f"corrupt {self.index_path}: expected an object with a 'manifests' list")
        index.setdefault("manifests", [])
        for entry in index["manifests"]:
            if not isinstance(entry, dict):
                raise CacheError(f"corrupt {self.index_path}: a manifests entry is not an object")
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        # Pretty and sorted: humans read this file when debugging the cache.
        data = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
        atomic_write(self.index_path, data, mode=0o644)

    def _update_index(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Read-modify-write ``index.json`` under the exclusive lock."""
        with self.locked():
            index = self.read_index()
            change(index)
            self._write_index(index)

    @contextlib.contextmanager
    def locked(self, *, shared: bool = False) -> Iterator[None]:
        """flock on ``index.json.lock``: exclusive for index changes and gc, shared for
        publishing blobs.  One fd per use: flock belongs to the open file description,
        so threads and processes exclude each other alike (and uses must not nest)."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise CacheError(f"no OCI layout at {self.root}") from None
        except OSError as exc:
            raise CacheError(f"cannot open lock {self.lock_path}: {_os_reason(exc)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last fd releases the flock

    # ------------------------------------------------------------------ refs

    def tag(self, name: str, descriptor: Descriptor) -> None:
        """Point ref ``name`` at ``descriptor`` (replacing any entry with that name).

        The descriptor's blob must be in the cache: checked under the lock, so a
        concurrent gc can never leave a ref to nothing.
        """
        _check_ref_name(name)
        entry = descriptor.to_json()
        annotations = dict(entry.get("annotations") or {})
        annotations[REF_NAME_ANNOTATION] = name
        entry["annotations"] = dict(sorted(annotations.items()))

        def change(index: dict[str, Any]) -> None:
            if not self.has_blob(descriptor.digest):
                raise CacheError(f"cannot tag {name}: blob {descriptor.digest} is not in the cache")
            index["manifests"] = [e for e in index["manifests"] if _entry_name(e) != name]
            index["manifests"].append(entry)
            index["manifests"].sort(key=lambda e: _entry_name(e) or "")

        self._update_index(change)

    def untag(self, name: str) -> bool:
        """Remove ref ``name``; False if it was not there.  Blobs stay until :meth:`gc`."""
        removed = False

        def change(index: dict[str, Any]) -> None:
            nonlocal removed
            kept = [e for e in index["manifests"] if _entry_name(e) != name]
            removed = len(kept) != len(index["manifests"])
            index["manifests"] = kept

        self._update_index(change)
        return removed

    def list_refs(self) -> list[tuple[str, Descriptor]]:
        """Named refs, sorted by name; entries without a ref name are skipped."""
        refs: list[tuple[str, Descriptor]] = []
        for entry in self.read_index()["manifests"]:
            name = _entry_name(entry)
            if name is None:
                continue
            refs.append((name, self._entry_descriptor(entry)))
        refs.sort(key=lambda item: item[0])
        return refs

    def _entry_descriptor(self, entry: dict[str, Any]) -> Descriptor:
        try:
            descriptor = Descriptor.from_json(entry)
        except PkgtoolError as exc:
            raise CacheError(f"corrupt {self.index_path}: {exc}") from None
        # Callers get back what they tagged: the ref name is the index's bookkeeping.
        annotations = {k: v for k, v in (descriptor.annotations or {}).items()
                       if k != REF_NAME_ANNOTATION}
        return Descriptor(
            media_type=descriptor.media_type,
            digest=descriptor.digest,
            size=descriptor.size,
            annotations=annotations or None,
            platform=descriptor.platform,
            artifact_type=descriptor.artifact_type,
        )

    # ------------------------------------------------------------------ ImageSource

    def resolve(self, ref: Reference | str) -> Descriptor | None:
        """A ref name (``str``, or a tagged :class:`Reference`, by its full name) in
        index.json; a :class:`Reference` with a digest names that blob, if present."""
        if isinstance(ref, Reference) and ref.digest:
            if not self.has_blob(ref.digest):
                return None
            data = self.read_blob(ref.digest, max_size=MAX_MANIFEST_BYTES)
            return Descriptor(manifest_media_type(data), ref.digest, len(data))
        name = str(ref)
        for found, descriptor in self.list_refs():
            if found == name:
                return descriptor
        return None

    def manifest(self, ref: Reference) -> Manifest:
        descriptor = self.resolve(ref)
        if descriptor is None:
            raise NotFoundError(f"{ref}: not in the cache at {self.root}")
        return self.manifest_at(descriptor, source=str(ref))

    def manifest_at(self, descriptor: Descriptor, *, source: str = "") -> Manifest:
        """The manifest or index ``descriptor`` names, verified and parsed."""
        data = self.read_blob(descriptor.digest, max_size=MAX_MANIFEST_BYTES)
        return parse_manifest(data, content_type=descriptor.media_type, digest=descriptor.digest,
                              source=source or descriptor.digest)

    def blob(self, ref: Reference, descriptor: Descriptor) -> BinaryIO:
        """The blob as a stream verified at its end (the repository does not matter here:
        the cache shares content between all of them)."""
        return self.open_blob(descriptor.digest)

    def blob_file(self, descriptor: Descriptor) -> Path | None:
        """The blob's file, if present (contents may be referenced in place: a blob never
        changes once it has its name)."""
        path = self.blob_path(descriptor.digest)
        return path if path.is_file() else None

    def referrers(self, ref: Reference, *, artifact_type: str | None = None) -> list[Descriptor]:
        """What a pull of the OCI fallback tag ``sha256-<hex>`` stored, if anything."""
        if not ref.digest:
            raise CacheError(f"{ref}: referrers are listed by digest, not by tag")
        index = self.resolve(ref.with_tag(fallback_tag(ref.digest)))
        if index is None or index.media_type not in mediatypes.INDEX_TYPES:
            return []
        found = self.manifest(ref.with_tag(fallback_tag(ref.digest))).manifests
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    def disk_usage(self) -> int:
        """Bytes of all complete blobs (shared blobs counted once)."""
        return sum(size for _digest, size in self.iter_blobs())

    # ------------------------------------------------------------------ bookkeeping for layout_gc

    def root_descriptors(self) -> list[Descriptor]:
        """Every entry of index.json, named or not: all of them keep their blobs alive."""
        return [self._entry_descriptor(e) for e in self.read_index()["manifests"]]

    def write_empty_index(self) -> None:
        """Replace index.json by an empty one (callers hold :meth:`locked`)."""
        self._write_index(_empty_index())


class _VerifyingReader(io.RawIOBase):
    """Hashes what passes through and checks it against the blob's name at EOF."""

    def __init__(self, raw: Any, *, digest: str, path: Path) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._path = path
        self._hasher = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n: int = self._raw.readinto(buffer)
        if n:
            self._hasher.update(memoryview(buffer)[:n])
        elif not self._checked:
            self._checked = True
            actual = "sha256:" + self._hasher.hexdigest()
            if actual != self._digest:
                raise CacheError(f"corrupt blob {self._path}: content hashes to {actual}")
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}


def _entry_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        name = annotations.get(REF_NAME_ANNOTATION)
        if isinstance(name, str):
            return name
    return None


def _check_ref_name(name: str) -> None:
    # Names are free-form for OCI, but whitespace and control characters would make
    # `cache ls` output ambiguous and are never part of an image reference.
    if not name or len(name) > MAX_REF_NAME or any(c.isspace() or ord(c) < 32 for c in name):
        raise CacheError(f"invalid ref name {name!r}")


def read_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


def _mkstemp(directory: Path) -> tuple[int, str]:
    name = directory / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return fd, str(name)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
