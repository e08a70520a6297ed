"""A client for the OCI distribution API (``/v2/``): manifests, blobs, tags, referrers.

Every byte that comes back is treated as hostile: manifests are size-bounded and checked
against the digest that named them, blobs are hashed while streamed, and errors quote the
registry's answer only in a short, sanitised form.  Credentials never appear in errors.

Transient faults (connection errors, 429, 5xx) are retried with exponential backoff,
honouring ``Retry-After`` up to a cap; when the client gives up, the error names the
registry and the operation, on one line.

One :class:`RegistryClient` talks to one registry host; :meth:`RegistryClient.for_registry`
gives a sibling for another host that shares the HTTP session, settings and tokens.
This is the only module that imports ``requests``, and only command handlers import it.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import ipaddress
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from pkgtool.errors import DigestMismatchError, PkgtoolError, RegistryError
from pkgtool.oci import auth, mediatypes
from pkgtool.oci.descriptor import Descriptor, check_digest, sha256_digest
from pkgtool.oci.manifest import Manifest, build_index, looks_like_html, parse_manifest

INSECURE_ENV = "PKGTOOL_INSECURE_REGISTRIES"
# Docker Hub's API does not live at the name people write.
_HUB_API_HOST = "registry-1.docker.io"
_READ_CHUNK = 1024 * 1024
DEFAULT_UPLOAD_CHUNK = 16 * 1024 * 1024
# Error bodies are only ever quoted, never trusted: read a little, show less.
_MAX_ERROR_BODY = 64 * 1024
_MAX_ERROR_TEXT = 200
_MAX_TAG_PAGES = 10_000
_MAX_TAG_LIST_BYTES = 16 * 1024 * 1024
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def fallback_referrers_tag(digest: str) -> str:
    """The tag of the referrers fallback index for ``digest`` (``sha256-<hex>``)."""
    check_digest(digest)
    return digest.replace(":", "-", 1)


def is_loopback(registry: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1, with or without a port."""
    host = registry_host(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_host(registry: str) -> str:
    """``registry`` without its port (and without IPv6 brackets)."""
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def insecure_from_env() -> frozenset[str]:
    raw = os.environ.get(INSECURE_ENV, "")
    return frozenset(item.strip() for item in raw.split(",") if item.strip())


@dataclass
class _Shared:
    """What sibling clients for different hosts share."""

    session: requests.Session
    insecure: frozenset[str]
    retries: int
    backoff: float
    max_backoff: float
    timeout: float
    connect_timeout: float
    docker_config: Path | None
    credentials: dict[str, auth.Credentials]
    clients: dict[str, RegistryClient] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RegistryClient:
    """The distribution API of one registry.  Safe to use from several threads."""

    def __init__(
        self,
        registry: str | None = None,
        *,
        insecure: Iterable[str] = (),
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        credentials: auth.Credentials | None = None,
        docker_config: Path | None = None,
        pool_size: int = 16,
    ) -> None:
        from pkgtool import settings

        self.registry = registry or settings.registry()
        session = requests.Session()
        # Our own retry loop decides what is transient; the adapter's must stay off.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = "pkgtool"
        self._shared = _Shared(
            session=session,
            insecure=frozenset(insecure) | insecure_from_env(),
            retries=max(0, retries),
            backoff=max(0.0, backoff),
            max_backoff=max(0.0, max_backoff),
            timeout=timeout,
            connect_timeout=connect_timeout,
            docker_config=docker_config,
            credentials={self.registry: credentials} if credentials else {},
        )
        self._shared.clients[self.registry] = self
        self._setup()

    def _setup(self) -> None:
        api_host = _HUB_API_HOST if self.registry == "docker.io" else self.registry
        self.base_url = f"{self.scheme}://{api_host}"
        self._auth_lock = threading.Lock()
        # Authorization header per scope set; Basic applies to every scope.
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._basic: str | None = None
        self._credentials_loaded = False
        self._credentials: auth.Credentials | None = None

    @property
    def scheme(self) -> str:
        host = registry_host(self.registry)
        plain = is_loopback(self.registry) or self.registry in self._shared.insecure or host in self._shared.insecure
        return "http" if plain else "https"

    @property
    def retries(self) -> int:
        return self._shared.retries

    def for_registry(self, registry: str) -> RegistryClient:
        """A client for ``registry`` sharing this one's session, settings and tokens."""
        with self._shared.lock:
            client = self._shared.clients.get(registry)
            if client is None:
                client = object.__new__(RegistryClient)
                client.registry = registry
                client._shared = self._shared
                client._setup()
                self._shared.clients[registry] = client
            return client

    def close(self) -> None:
        self._shared.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    # ------------------------------------------------------------------ general

    def ping(self) -> None:
        """Check that the registry answers the v2 API (authenticating if it asks)."""
        response = self._request("GET", "/v2/", operation="GET /v2/", scopes=())
        self._expect(response, (200,), "GET /v2/")
        response.close()

    # ------------------------------------------------------------------ manifests

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of ``repository:reference`` without its body, or None if absent.

        Falls back to a GET when the registry leaves out the digest or type headers.
        """
        operation = f"HEAD manifest {self._name(repository, reference)}"
        response = self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull"),),
            headers={"Accept": mediatypes.MANIFEST_ACCEPT},
        )
        response.close()
        if response.status_code == 404:
            return None
        self._expect(response, (200,), operation)
        media_type = _content_type(response)
        digest = response.headers.get("Docker-Content-Digest", "")
        length = response.headers.get("Content-Length", "")
        if media_type in mediatypes.ALL_MANIFEST_TYPES and _is_sha256(digest) and length.isdigit():
            if reference.startswith("sha256:") and digest != reference:
                raise DigestMismatchError(f"{self._name(repository, reference)}: registry says its digest is {digest}")
            return Descriptor(media_type, digest, int(length))
        return self.get_manifest(repository, reference).descriptor

    def resolve(self, repository: str, reference: str) -> Descriptor:
        """Resolve a tag (or digest) to the descriptor of what it names."""
        found = self.head_manifest(repository, reference)
        if found is None:
            raise RegistryError(f"{self._name(repository, reference)}: manifest not found")
        return found

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch, verify and parse a manifest or index.

        By digest, the bytes must hash to it.  By tag, they must hash to the registry's
        ``Docker-Content-Digest`` when it sends one.
        """
        found = self.get_manifest_or_none(repository, reference)
        if found is None:
            raise RegistryError(f"{self._name(repository, reference)}: manifest not found")
        return found

    def get_manifest_or_none(self, repository: str, reference: str) -> Manifest | None:
        name = self._name(repository, reference)
        operation = f"GET manifest {repository}{_sep(reference)}{reference}"
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull"),),
            headers={"Accept": mediatypes.MANIFEST_ACCEPT},
        )
        with response:
            if response.status_code == 404:
                return None
            self._expect(response, (200,), operation)
            content_type = _content_type(response)
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > mediatypes.MAX_MANIFEST_BYTES:
                raise RegistryError(
                    f"{name}: manifest is {length} bytes, over the {mediatypes.MAX_MANIFEST_BYTES}-byte limit"
                )
            data = self._read_bounded(response, mediatypes.MAX_MANIFEST_BYTES, operation, what="manifest")
        if content_type == "text/html" or looks_like_html(data):
            raise RegistryError(
                f"registry {self.registry}: {operation}: got an HTML page, not a manifest "
                "(is this really a registry?)"
            )
        actual = sha256_digest(data)
        expected = reference if reference.startswith("sha256:") else response.headers.get("Docker-Content-Digest", "")
        if (reference.startswith("sha256:") or _is_sha256(expected)) and actual != expected:
            raise DigestMismatchError(f"{name}: manifest content hashes to {actual}, not {expected}")
        return parse_manifest(data, content_type=content_type, digest=actual, source=name)

    def get_manifest_bytes_or_none(self, repository: str, reference: str) -> bytes | None:
        found = self.get_manifest_or_none(repository, reference)
        return None if found is None else found.data

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Descriptor:
        """Store a manifest at a tag or at its digest; returns its descriptor.

        The bytes are validated first (a malformed manifest is our bug, and a registry
        may accept it), and the digest the registry reports must be ours.
        """
        name = self._name(repository, reference)
        parsed = parse_manifest(data, content_type=media_type, source=name)
        if parsed.media_type != media_type:
            raise PkgtoolError(f"{name}: manifest says mediaType {parsed.media_type}, pushed as {media_type}")
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and reference != digest:
            raise DigestMismatchError(f"{name}: manifest bytes hash to {digest}")
        operation = f"PUT manifest {repository}{_sep(reference)}{reference}"
        response = self._request(
            "PUT", f"/v2/{repository}/manifests/{reference}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull,push"),),
            headers={"Content-Type": media_type}, data=data,
        )
        with response:
            self._expect(response, (200, 201), operation)
            stored = response.headers.get("Docker-Content-Digest", "")
        if _is_sha256(stored) and stored != digest:
            raise DigestMismatchError(f"{name}: registry stored the manifest as {stored}, expected {digest}")
        return Descriptor(media_type, digest, len(data), artifact_type=parsed.artifact_type)

    def delete_manifest(self, repository: str, digest: str) -> None:
        check_digest(digest)
        operation = f"DELETE manifest {repository}@{digest}"
        response = self._request(
            "DELETE", f"/v2/{repository}/manifests/{digest}", operation=operation,
            scopes=(auth.repository_scope(repository, "delete"),),
        )
        with response:
            self._expect(response, (200, 202), operation)

    # ------------------------------------------------------------------ tags

    def list_tags(self, repository: str, *, page_size: int | None = None) -> list[str]:
        """Every tag of ``repository`` (following ``Link`` pagination); [] if unknown."""
        tags: list[str] = []
        url: str | None = f"/v2/{repository}/tags/list"
        params: dict[str, str] | None = {"n": str(page_size)} if page_size else None
        operation = f"GET tags {repository}"
        for _page in range(_MAX_TAG_PAGES):
            if url is None:
                return tags
            response = self._request(
                "GET", url, operation=operation, params=params,
                scopes=(auth.repository_scope(repository, "pull"),),
            )
            with response:
                if response.status_code == 404:
                    return tags
                self._expect(response, (200,), operation)
                body = self._read_bounded(response, _MAX_TAG_LIST_BYTES, operation, what="tag list")
                url = _next_link(response.headers.get("Link", ""), response.url)
            params = None  # the next link carries its own query
            tags.extend(_parse_tag_list(body, f"registry {self.registry}: {operation}"))
        raise RegistryError(f"registry {self.registry}: {operation}: more than {_MAX_TAG_PAGES} pages")

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, repository: str, digest: str) -> bool:
        check_digest(digest)
        operation = f"HEAD blob {repository}@{digest}"
        response = self._request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull"),),
        )
        response.close()
        if response.status_code == 404:
            return False
        self._expect(response, (200,), operation)
        return True

    def iter_blob(
        self, repository: str, digest: str, *, expected_size: int | None = None
    ) -> Iterator[bytes]:
        """Stream a blob's bytes, hashing as they pass.

        More bytes than ``expected_size`` stops the stream; at the end, a digest or size
        mismatch raises :class:`DigestMismatchError`, so a consumer that stores the
        chunks must only keep them once the iterator finished cleanly.
        """
        check_digest(digest)
        operation = f"GET blob {repository}@{digest}"
        response = self._request(
            "GET", f"/v2/{repository}/blobs/{digest}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull"),),
        )
        with response:
            if response.status_code == 404:
                raise RegistryError(f"{self.registry}/{repository}@{digest}: blob not found")
            self._expect(response, (200,), operation)
            length = response.headers.get("Content-Length", "")
            if expected_size is not None and length.isdigit() and int(length) != expected_size:
                raise DigestMismatchError(
                    f"blob {digest} from {self.registry}/{repository}: registry sends {length} bytes, expected {expected_size}"
                )
            hasher = hashlib.sha256()
            size = 0
            try:
                for chunk in response.iter_content(_READ_CHUNK):
                    size += len(chunk)
                    if expected_size is not None and size > expected_size:
                        raise DigestMismatchError(
                            f"blob {digest} from {self.registry}/{repository}: more than the expected {expected_size} bytes"
                        )
                    hasher.update(chunk)
                    yield chunk
            except requests.RequestException as exc:
                raise RegistryError(
                    f"registry {self.registry}: {operation}: transfer broke off after {size} bytes ({_reason(exc)})"
                ) from None
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise DigestMismatchError(f"blob {digest} from {self.registry}/{repository}: content hashes to {actual}")
        if expected_size is not None and size != expected_size:
            raise DigestMismatchError(
                f"blob {digest} from {self.registry}/{repository}: got {size} bytes, expected {expected_size}"
            )

    def get_blob_bytes(self, repository: str, digest: str, *, max_size: int) -> bytes:
        """A small blob in memory, verified; more than ``max_size`` bytes is an error."""
        parts: list[bytes] = []
        total = 0
        for chunk in self.iter_blob(repository, digest):
            total += len(chunk)
            if total > max_size:
                raise RegistryError(f"{self.registry}/{repository}@{digest}: blob is over the {max_size}-byte limit")
            parts.append(chunk)
        return b"".join(parts)

    def push_blob_bytes(self, repository: str, data: bytes) -> str:
        """Upload ``data`` unless the registry has it; returns its digest."""
        digest = sha256_digest(data)
        return self.push_blob(repository, data, digest=digest, size=len(data))

    def push_blob(
        self,
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
        monolithic PUT.  The registry checks the content against ``digest``.
        """
        check_digest(digest)
        if self.blob_exists(repository, digest):
            return digest
        mounted, location = self._start_upload(repository, digest=digest, mount_from=mount_from)
        if mounted:
            return digest
        if chunk_size is not None:
            location = self._upload_chunks(repository, location, source, size=size, chunk_size=chunk_size)
            body: bytes | BinaryIO = b""
        else:
            body = source
        operation = f"PUT blob {repository}@{digest}"
        response = self._request(
            "PUT", location, operation=operation, params={"digest": digest}, data=body,
            scopes=(auth.repository_scope(repository, "pull,push"),),
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(size if chunk_size is None else 0)},
        )
        with response:
            self._expect(response, (201,), operation)
            stored = response.headers.get("Docker-Content-Digest", "")
        if _is_sha256(stored) and stored != digest:
            raise DigestMismatchError(f"{self.registry}/{repository}: registry stored blob {digest} as {stored}")
        return digest

    def mount_blob(self, repository: str, digest: str, *, from_repository: str) -> bool:
        """Cross-repository mount; False (and no upload left open) if the registry declines."""
        mounted, location = self._start_upload(repository, digest=digest, mount_from=from_repository)
        if not mounted:
            # Cancel the upload session the registry opened instead; failure is harmless.
            with contextlib.suppress(RegistryError):
                self._request("DELETE", location, operation=f"DELETE upload {repository}",
                              scopes=(auth.repository_scope(repository, "pull,push"),)).close()
        return mounted

    def _start_upload(self, repository: str, *, digest: str, mount_from: str | None) -> tuple[bool, str]:
        """POST an upload (or mount); (True, blob URL) if mounted, else (False, upload URL)."""
        params: dict[str, str] | None = None
        scopes = [auth.repository_scope(repository, "pull,push")]
        operation = f"POST upload {repository}"
        if mount_from:
            params = {"mount": digest, "from": mount_from}
            scopes.append(auth.repository_scope(mount_from, "pull"))
            operation = f"POST mount {repository}@{digest} from {mount_from}"
        response = self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", operation=operation, params=params,
            scopes=tuple(scopes), headers={"Content-Length": "0"},
        )
        with response:
            self._expect(response, (201, 202), operation)
            location = response.headers.get("Location", "")
        if not location:
            raise RegistryError(f"registry {self.registry}: {operation}: answer has no Location header")
        return response.status_code == 201, self._absolute(location)

    def _upload_chunks(
        self, repository: str, location: str, source: bytes | BinaryIO, *, size: int, chunk_size: int
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
                raise PkgtoolError(f"upload to {self.registry}/{repository}: source ended at {offset} of {size} bytes")
            end = offset + len(chunk) - 1
            response = self._request(
                "PATCH", location, operation=f"{operation} bytes {offset}-{end}", data=chunk,
                scopes=(auth.repository_scope(repository, "pull,push"),),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Range": f"{offset}-{end}", "Content-Length": str(len(chunk))},
            )
            with response:
                self._expect(response, (202,), operation)
                next_location = response.headers.get("Location", "")
            location = self._absolute(next_location) if next_location else location
            offset = end + 1
        return location

    # ------------------------------------------------------------------ referrers

    def list_referrers(
        self, repository: str, digest: str, *, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Manifests whose ``subject`` is ``digest``: from the referrers API, or from the
        fallback index at tag ``sha256-<hex>`` where the registry has no such API."""
        api = self._referrers_api(repository, digest, artifact_type=artifact_type)
        found = api if api is not None else self._fallback_referrers(repository, digest)
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    # sign/attach.py's Registry protocol calls it by this name.
    referrers = list_referrers

    def add_referrer(self, repository: str, subject: Descriptor | str, descriptor: Descriptor) -> None:
        """Record ``descriptor`` (a manifest already pushed, whose subject is ``subject``).

        A registry with the referrers API indexes it by itself.  Otherwise the fallback
        index is read, extended (no duplicates) and written back; the write is re-read to
        catch a concurrent writer that replaced it, and repeated a few times if so.
        """
        subject_digest = subject if isinstance(subject, str) else subject.digest
        check_digest(subject_digest)
        if self._referrers_api(repository, subject_digest, artifact_type=None) is not None:
            return
        tag = fallback_referrers_tag(subject_digest)
        for _attempt in range(5):
            current = self._fallback_referrers(repository, subject_digest)
            if any(d.digest == descriptor.digest for d in current):
                return
            index = build_index([*current, descriptor])
            self.put_manifest(repository, tag, index, mediatypes.OCI_INDEX)
            if any(d.digest == descriptor.digest for d in self._fallback_referrers(repository, subject_digest)):
                return
        raise RegistryError(
            f"registry {self.registry}: could not add a referrer to {repository}:{tag}: "
            "other writers keep replacing it"
        )

    def _referrers_api(
        self, repository: str, digest: str, *, artifact_type: str | None
    ) -> list[Descriptor] | None:
        check_digest(digest)
        operation = f"GET referrers {repository}@{digest}"
        response = self._request(
            "GET", f"/v2/{repository}/referrers/{digest}", operation=operation,
            params={"artifactType": artifact_type} if artifact_type else None,
            scopes=(auth.repository_scope(repository, "pull"),),
            headers={"Accept": mediatypes.OCI_INDEX},
        )
        with response:
            # 404 is how a registry without the API answers (Distribution 2.8 does).
            if response.status_code == 404:
                return None
            self._expect(response, (200,), operation)
            data = self._read_bounded(response, mediatypes.MAX_MANIFEST_BYTES, operation, what="referrers index")
            content_type = _content_type(response)
        if content_type != mediatypes.OCI_INDEX:
            # Some servers answer unknown routes with a 200 page: that is no referrers API.
            return None
        return list(parse_manifest(data, content_type=content_type, source=operation).manifests)

    def _fallback_referrers(self, repository: str, digest: str) -> list[Descriptor]:
        found = self.get_manifest_or_none(repository, fallback_referrers_tag(digest))
        if found is None:
            return []
        if not found.is_index:
            raise RegistryError(
                f"{self._name(repository, fallback_referrers_tag(digest))}: referrers tag holds a "
                f"{found.media_type}, not an index"
            )
        return list(found.manifests)

    # ------------------------------------------------------------------ HTTP core

    def _request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        data: bytes | BinaryIO | None = None,
    ) -> requests.Response:
        """Send with retries; on a 401, authenticate once and send again."""
        full_url = self._absolute(url)
        header = self._auth_header(scopes)
        response = self._send(method, full_url, operation=operation, headers=headers,
                              params=params, data=data, authorization=header)
        if response.status_code != 401:
            return response
        challenge_text = response.headers.get("WWW-Authenticate", "")
        response.close()
        header = self._authenticate(challenge_text, scopes, operation)
        return self._send(method, full_url, operation=operation, headers=headers,
                          params=params, data=data, authorization=header)

    def _send(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        headers: dict[str, str] | None,
        params: dict[str, str] | None,
        data: bytes | BinaryIO | None,
        authorization: str | None,
        auth_pair: tuple[str, str] | None = None,
    ) -> requests.Response:
        shared = self._shared
        all_headers = dict(headers or {})
        if authorization:
            all_headers["Authorization"] = authorization
        start = data.tell() if data is not None and not isinstance(data, bytes) else None
        attempts = shared.retries + 1
        for attempt in range(attempts):
            if start is not None and attempt:
                # A retried upload must send the body from its beginning again.
                assert data is not None and not isinstance(data, bytes)
                data.seek(start)
            try:
                response = shared.session.request(
                    method, url, headers=all_headers, params=params, data=data, stream=True,
                    timeout=(shared.connect_timeout, shared.timeout), auth=auth_pair,
                )
            except requests.exceptions.SSLError as exc:
                raise RegistryError(
                    f"registry {self.registry}: TLS failed ({operation}): {_reason(exc)}; "
                    f"for a plain-HTTP registry add it to ${INSECURE_ENV}"
                ) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt + 1 >= attempts:
                    raise RegistryError(
                        f"registry {self.registry}: cannot connect ({operation}): {_reason(exc)}"
                    ) from None
                time.sleep(self._delay(attempt, None))
                continue
            except requests.RequestException as exc:
                raise RegistryError(f"registry {self.registry}: {operation}: {_reason(exc)}") from None
            if response.status_code not in _RETRY_STATUSES:
                return response
            response.close()
            if attempt + 1 >= attempts:
                raise RegistryError(
                    f"registry {self.registry}: {operation}: HTTP {response.status_code} "
                    f"{response.reason or ''}".rstrip() + f" (gave up after {attempts} attempts)"
                )
            time.sleep(self._delay(attempt, response.headers.get("Retry-After")))
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        shared = self._shared
        delay: float = shared.backoff * (2 ** attempt)
        if retry_after:
            asked = _parse_retry_after(retry_after)
            if asked is not None:
                delay = max(delay, asked)
        # A hostile or confused Retry-After must not stall us for an hour.
        return min(delay, shared.max_backoff)

    # ------------------------------------------------------------------ auth

    def _auth_header(self, scopes: tuple[str, ...]) -> str | None:
        with self._auth_lock:
            token = self._tokens.get(tuple(sorted(scopes)))
            if token is not None and token[1] > time.monotonic():
                return token[0]
            return self._basic

    def _load_credentials(self) -> auth.Credentials | None:
        with self._auth_lock:
            if not self._credentials_loaded:
                self._credentials = self._shared.credentials.get(self.registry) or auth.lookup_credentials(
                    self.registry, config_path=self._shared.docker_config
                )
                self._credentials_loaded = True
            return self._credentials

    def _authenticate(self, challenge_text: str, scopes: tuple[str, ...], operation: str) -> str:
        challenge = auth.pick_challenge(auth.parse_www_authenticate(challenge_text))
        credentials = self._load_credentials()
        if challenge is None:
            raise RegistryError(
                f"registry {self.registry}: {operation}: unauthorized, and no usable authentication challenge"
            )
        if challenge.is_basic:
            if credentials is None:
                raise RegistryError(
                    f"registry {self.registry}: {operation}: needs credentials "
                    "(none for it in the docker config; run docker login)"
                )
            header = credentials.basic_header()
            with self._auth_lock:
                self._basic = header
            return header
        try:
            realm, query = auth.token_params(challenge, list(scopes))
        except PkgtoolError as exc:
            raise RegistryError(f"registry {self.registry}: {operation}: {exc}") from None
        token_operation = f"token for {operation}"
        pair = (credentials.username, credentials.password) if credentials else None
        response = self._send_query(realm, query, token_operation, pair)
        with response:
            if response.status_code in (401, 403):
                raise RegistryError(
                    f"registry {self.registry}: {operation}: the token service at "
                    f"{urlsplit(realm).netloc} refused {'the credentials' if credentials else 'anonymous access'}"
                )
            self._expect(response, (200,), token_operation)
            data = self._read_bounded(response, auth.MAX_TOKEN_RESPONSE_BYTES, token_operation, what="token")
        try:
            token, lifetime = auth.parse_token_response(data)
        except PkgtoolError as exc:
            raise RegistryError(f"registry {self.registry}: {operation}: {exc}") from None
        header = f"Bearer {token}"
        with self._auth_lock:
            # Expire a little early: a token that dies mid-request costs a retry.
            self._tokens[tuple(sorted(scopes))] = (header, time.monotonic() + max(1.0, lifetime - 10))
        return header

    def _send_query(
        self, url: str, query: list[tuple[str, str]], operation: str, pair: tuple[str, str] | None
    ) -> requests.Response:
        # The token endpoint takes repeated ``scope`` parameters: encode them ourselves.
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        return self._send("GET", url, operation=operation, headers=None,
                          params=None, data=None, authorization=None, auth_pair=pair)

    # ------------------------------------------------------------------ helpers

    def _absolute(self, url: str) -> str:
        return url if url.startswith(("http://", "https://")) else urljoin(self.base_url + "/", url)

    def _name(self, repository: str, reference: str) -> str:
        return f"{self.registry}/{repository}{_sep(reference)}{reference}"

    def _expect(self, response: requests.Response, ok: tuple[int, ...], operation: str) -> None:
        if response.status_code in ok:
            return
        detail = self._error_detail(response)
        response.close()
        raise RegistryError(f"registry {self.registry}: {operation}: HTTP {response.status_code}{detail}")

    def _error_detail(self, response: requests.Response) -> str:
        try:
            body = self._read_bounded(response, _MAX_ERROR_BODY, "error", what="error", truncate=True)
        except RegistryError:
            return ""
        if _content_type(response) == "text/html" or looks_like_html(body):
            return " (an HTML page: is this really a registry?)"
        return f" ({_short_error(body)})" if body.strip() else ""

    def _read_bounded(
        self, response: requests.Response, limit: int, operation: str, *, what: str, truncate: bool = False
    ) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_content(64 * 1024):
                total += len(chunk)
                if total > limit:
                    if truncate:
                        parts.append(chunk)
                        break
                    raise RegistryError(f"registry {self.registry}: {operation}: {what} is over the {limit}-byte limit")
                parts.append(chunk)
        except requests.RequestException as exc:
            raise RegistryError(f"registry {self.registry}: {operation}: reading the answer failed ({_reason(exc)})") from None
        return b"".join(parts)[: limit if truncate else None]


# --------------------------------------------------------------------------- pure helpers


def _sep(reference: str) -> str:
    return "@" if reference.startswith("sha256:") else ":"


def _is_sha256(value: str) -> bool:
    try:
        check_digest(value)
    except PkgtoolError:
        return False
    return True


def _content_type(response: requests.Response) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def _parse_retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _next_link(header: str, current_url: str) -> str | None:
    """The ``rel="next"`` target of a Link header, made absolute."""
    for part in header.split(","):
        target, _, rest = part.partition(";")
        target = target.strip()
        if target.startswith("<") and target.endswith(">") and 'rel="next"' in rest.replace(" ", ""):
            return urljoin(current_url, target[1:-1])
    return None


def _parse_tag_list(body: bytes, context: str) -> list[str]:
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        raise RegistryError(f"{context}: answer is not JSON") from None
    tags = doc.get("tags") if isinstance(doc, dict) else None
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RegistryError(f"{context}: 'tags' is not a list of strings")
    return list(tags)


def _short_error(body: bytes) -> str:
    """A registry's error answer as one short line: ``CODE: message`` when it is the
    distribution JSON error format, else the start of the text, sanitised."""
    import json

    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list) and doc["errors"]:
        first = doc["errors"][0]
        if isinstance(first, dict):
            text = f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
            return _printable(text)
    return _printable(body.decode("utf-8", "replace"))


def _printable(text: str) -> str:
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat[:_MAX_ERROR_TEXT] + ("…" if len(flat) > _MAX_ERROR_TEXT else "")


_REASONS = (
    ("connection refused", "connection refused"),
    ("name or service not known", "unknown host"),
    ("temporary failure in name resolution", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network is unreachable"),
    ("connection reset", "connection reset"),
    ("remotedisconnected", "connection closed by the server"),
    ("connection aborted", "connection closed by the server"),
    ("timed out", "timed out"),
    ("certificate verify failed", "certificate verify failed"),
    ("wrong version number", "the server does not speak TLS"),
)


def _reason(exc: BaseException) -> str:
    """A short, lowercase cause for a requests exception (they nest urllib3's verbosely)."""
    text = str(exc).lower()
    for needle, reason in _REASONS:
        if needle in text:
            return reason
    return _printable(str(exc))[:120] or type(exc).__name__
