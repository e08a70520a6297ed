"""Blob transfers of the registry client: downloads that resume and verify, uploads that
restart their session.

Downloads: a blob is hashed while it streams.  A body that breaks off is resumed with a
``Range`` request where the registry answers 206 for the right range; where it does not, the
attempt ends and the next one starts from zero.  :func:`download_blob` streams each attempt
into the layout cache's temp file, which becomes the blob only if digest and size match, so
bytes that failed verification are never kept; the transport retries it (bounded attempts
and time) on every transient fault, digest mismatches included.

Uploads: a session (POST, then PATCH chunks and a PUT, or one PUT) that fails midway is
abandoned and a new one started, since a registry may have taken part of a failed request;
the blob is then confirmed with a HEAD before the caller goes on to push a manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import requests

from pkgtool.errors import DigestMismatchError, PkgtoolError, RegistryError
from pkgtool.oci import auth
from pkgtool.oci.descriptor import Descriptor, check_digest, is_digest, sha256_digest
from pkgtool.oci.http import TransientError, reason

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient

READ_CHUNK = 1024 * 1024
# A read that broke off is resumed with Range at most this many times within one attempt
# (each resume must make progress, or the attempt fails and the transport backs off).
_MAX_RESUMES = 8


def iter_blob(
    client: RegistryClient, repository: str, digest: str, *, expected_size: int | None = None
) -> Iterator[bytes]:
    """Stream a blob's bytes, hashing as they pass: one attempt of a download.

    A body that breaks off is resumed with a ``Range`` request (bounded; only where the
    registry answers 206 for the right range).  More bytes than ``expected_size`` stops
    the stream; at the end, a digest or size mismatch raises
    :class:`~pkgtool.oci.http.TransientError`, so a consumer that stores the chunks
    must only keep them once the iterator finished cleanly (as
    :meth:`download_blob` does, which also retries).
    """
    check_digest(digest)
    where = f"blob {digest} from {client.registry}/{repository}"
    hasher = hashlib.sha256()
    size = 0
    resumes = 0
    while True:
        try:
            for chunk in _blob_body(client, repository, digest, offset=size, expected_size=expected_size):
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    raise TransientError(f"{where}: more than the expected {expected_size} bytes", final=DigestMismatchError)
                hasher.update(chunk)
                yield chunk
            break
        except _BrokenBody as exc:
            resumes += 1
            if resumes > _MAX_RESUMES or expected_size is None or size >= expected_size or exc.progress == 0:
                raise TransientError(f"transfer of {digest} broke off after {size} bytes ({exc.cause})") from None
    actual = "sha256:" + hasher.hexdigest()
    if actual != digest:
        raise TransientError(f"{where}: content hashes to {actual}", final=DigestMismatchError)
    if expected_size is not None and size != expected_size:
        raise TransientError(f"{where}: got {size} bytes, expected {expected_size}", final=DigestMismatchError)

def _blob_body(client: RegistryClient, repository: str, digest: str, *, offset: int, expected_size: int | None) -> Iterator[bytes]:
    """One GET of the blob from ``offset``; raises :class:`_BrokenBody` if it breaks off."""
    operation = f"GET blob {repository}@{digest}"
    headers = {"Range": f"bytes={offset}-"} if offset else None
    response = client.request(
        "GET", f"/v2/{repository}/blobs/{digest}", operation=operation,
        scopes=(auth.repository_scope(repository, "pull"),), headers=headers,
    )
    with response:
        if response.status_code == 404:
            raise RegistryError(f"{client.registry}/{repository}@{digest}: blob not found")
        if offset:
            if response.status_code != 206 or not _range_starts_at(response, offset):
                # No usable Range support: the download starts again from zero.
                raise TransientError(f"transfer of {digest} broke off after {offset} bytes and "
                                     "the registry does not resume it")
        else:
            client.expect(response, (200,), operation)
            length = response.headers.get("Content-Length", "")
            if expected_size is not None and length.isdigit() and int(length) != expected_size:
                raise TransientError(
                    f"blob {digest} from {client.registry}/{repository}: registry sends {length} bytes, "
                    f"expected {expected_size}"
                )
        progress = 0
        try:
            for chunk in response.iter_content(READ_CHUNK):
                progress += len(chunk)
                yield chunk
        except requests.RequestException as exc:
            raise _BrokenBody(reason(exc), progress) from None

def download_blob(client: RegistryClient, repository: str, descriptor: Descriptor, layout: Layout) -> Path:
    """Download a blob into the layout cache, verified, with retries; returns its path.

    Each attempt streams into a temp file that becomes the blob only if its bytes match
    the digest and size, so nothing that failed verification is ever kept.
    """
    operation = f"GET blob {repository}@{descriptor.digest}"

    def attempt(_n: int) -> Path:
        return layout.ingest(
            iter_blob(client, repository, descriptor.digest, expected_size=descriptor.size),
            expected_digest=descriptor.digest, expected_size=descriptor.size,
        )

    return client.transport.retrying(client.registry, operation, attempt)

def get_blob_bytes(client: RegistryClient, repository: str, digest: str, *, max_size: int) -> bytes:
    """A small blob in memory, verified (retried like any download); more than
    ``max_size`` bytes is an error."""

    def attempt(_n: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        for chunk in iter_blob(client, repository, digest):
            total += len(chunk)
            if total > max_size:
                raise RegistryError(f"{client.registry}/{repository}@{digest}: blob is over the {max_size}-byte limit")
            parts.append(chunk)
        return b"".join(parts)

    return client.transport.retrying(client.registry, f"GET blob {repository}@{digest}", attempt)

def push_blob_bytes(client: RegistryClient, repository: str, data: bytes) -> str:
    """Upload ``data`` unless the registry has it; returns its digest."""
    digest = sha256_digest(data)
    return push_blob(client, repository, data, digest=digest, size=len(data))

def push_blob(
    client: RegistryClient,
    repository: str,
    source: bytes | BinaryIO,
    *,
    digest: str,
    size: int,
    chunk_size: int | None = None,
    mount_from: str | None = None,
) -> str:
    """Upload a blob (bytes or a binary file positioned at its start) unless present.

    ``mount_from`` first asks the registry to mount the blob from that repository
    (same registry); if it declines, the upload session it opened is used.  With
    ``chunk_size``, the upload is chunked (PATCH per chunk, then PUT); otherwise one
    monolithic PUT.  The registry checks the content against ``digest``; the blob is
    then confirmed with a HEAD, so a manifest pushed after it never names a missing
    blob.  A session that fails midway is abandoned and a new one started.
    """
    check_digest(digest)
    if client.blob_exists(repository, digest):
        return digest
    start = source.tell() if not isinstance(source, bytes) else 0
    operation = f"PUT blob {repository}@{digest}"

    def attempt(_n: int) -> str:
        if not isinstance(source, bytes):
            source.seek(start)
        _upload_session(client, repository, source, digest=digest, size=size, chunk_size=chunk_size,
                             mount_from=mount_from)
        if not client.blob_exists(repository, digest):
            raise TransientError("the registry accepted the upload but does not have the blob")
        return digest

    return client.transport.retrying(client.registry, operation, attempt)

def _upload_session(client: RegistryClient, repository: str, source: bytes | BinaryIO, *, digest: str, size: int,
                    chunk_size: int | None, mount_from: str | None) -> None:
    mounted, location = _start_upload(client, repository, digest=digest, mount_from=mount_from)
    if mounted:
        return
    if chunk_size is not None:
        location = _upload_chunks(client, repository, location, source, size=size, chunk_size=chunk_size)
        body: bytes | BinaryIO = b""
    else:
        body = source
    operation = f"PUT blob {repository}@{digest}"
    response = client.request(
        "PUT", location, operation=operation, params={"digest": digest}, data=body,
        scopes=(auth.repository_scope(repository, "pull,push"),),
        headers={"Content-Type": "application/octet-stream",
                 "Content-Length": str(size if chunk_size is None else 0)},
        retry=False,
    )
    with response:
        client.expect(response, (201,), operation)
        stored = response.headers.get("Docker-Content-Digest", "")
    if is_digest(stored) and stored != digest:
        raise DigestMismatchError(f"{client.registry}/{repository}: registry stored blob {digest} as {stored}")

def mount_blob(client: RegistryClient, repository: str, digest: str, *, from_repository: str) -> bool:
    """Cross-repository mount; False (and no upload left open) if the registry declines."""
    mounted, location = _start_upload(client, repository, digest=digest, mount_from=from_repository)
    if not mounted:
        # Cancel the upload session the registry opened instead; failure is harmless.
        with contextlib.suppress(PkgtoolError):
            client.request("DELETE", location, operation=f"DELETE upload {repository}",
                          scopes=(auth.repository_scope(repository, "pull,push"),)).close()
    return mounted

def _start_upload(client: RegistryClient, repository: str, *, digest: str, mount_from: str | None) -> tuple[bool, str]:
    """POST an upload (or mount); (True, blob URL) if mounted, else (False, upload URL)."""
    params: dict[str, str] | None = None
    scopes = [auth.repository_scope(repository, "pull,push")]
    operation = f"POST upload {repository}"
    if mount_from:
        params = {"mount": digest, "from": mount_from}
        scopes.append(auth.repository_scope(mount_from, "pull"))
        operation = f"POST mount {repository}@{digest} from {mount_from}"
    response = client.request(
        "POST", f"/v2/{repository}/blobs/uploads/", operation=operation, params=params,
        scopes=tuple(scopes), headers={"Content-Length": "0"},
    )
    with response:
        client.expect(response, (201, 202), operation)
        location = response.headers.get("Location", "")
    if not location:
        raise RegistryError(f"registry {client.registry}: {operation}: answer has no Location header")
    return response.status_code == 201, client.absolute(location)

def _upload_chunks(
    client: RegistryClient, repository: str, location: str, source: bytes | BinaryIO, *, size: int, chunk_size: int
) -> str:
    if chunk_size <= 0:
        raise PkgtoolError(f"invalid upload chunk size {chunk_size}")
    operation = f"PATCH upload {repository}"
    offset = 0
    while offset < size:
        if isinstance(source, bytes):
            chunk = source[offset:offset + chunk_size]
        else:
            chunk = source.read(min(chunk_size, size - offset))
        if not chunk:
            raise PkgtoolError(f"upload to {client.registry}/{repository}: source ended at {offset} of {size} bytes")
        end = offset + len(chunk) - 1
        # Not retried alone: a registry may have taken part of a failed PATCH, so the
        # whole session starts again (push_blob's loop).
        response = client.request(
            "PATCH", location, operation=f"{operation} bytes {offset}-{end}", data=chunk,
            scopes=(auth.repository_scope(repository, "pull,push"),),
            headers={"Content-Type": "application/octet-stream",
                     "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))},
            retry=False,
        )
        with response:
            client.expect(response, (202,), operation)
            next_location = response.headers.get("Location", "")
        location = client.absolute(next_location) if next_location else location
        offset = end + 1
    return location



class _BrokenBody(Exception):
    """A blob body broke off after ``progress`` bytes of this request (resumable)."""

    def __init__(self, cause: str, progress: int) -> None:
        super().__init__(cause)
        self.cause, self.progress = cause, progress




def _range_starts_at(response: requests.Response, offset: int) -> bool:
    """Whether a 206 answer's ``Content-Range`` (``bytes START-END/TOTAL``) starts at ``offset``."""
    value = response.headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    start = spec.split("-", 1)[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset


