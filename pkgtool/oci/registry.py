"""A client for the OCI distribution API (``/v2/``): manifests, blobs, tags, referrers.

Every byte that comes back is treated as hostile: manifests are size-bounded and checked
against the digest that named them, blobs are hashed while streamed, and errors quote the
registry's answer only in a short, sanitised form.  Credentials never appear in errors.

Faults are retried by the transport (:mod:`pkgtool.oci.http`): connection errors, 429 and
5xx per request; and here, per transfer, a body that breaks off while it is read and bytes
that do not hash to their digest.  A blob whose download breaks is resumed with a ``Range``
request where the registry honours it, and downloaded again from its start where it does
not; bytes that failed verification are never kept.  Uploads restart their whole session
when one of its requests fails.  When the client gives up, the error is one line naming
the registry, the object and the last cause.

One :class:`RegistryClient` talks to one registry host; :meth:`RegistryClient.for_registry`
gives a sibling for another host that shares the transport, settings and credentials.  It
is an :class:`~pkgtool.oci.source.ImageSource` (``resolve``, ``manifest``, ``blob``,
``referrers``) besides the full API.  Only command handlers import it.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urljoin

import requests

from pkgtool.errors import DigestMismatchError, PkgtoolError, RegistryError
from pkgtool.oci import auth, blobs, mediatypes, referrers
from pkgtool.oci.descriptor import Descriptor, check_digest, is_digest, sha256_digest
from pkgtool.oci.http import (
    INSECURE_ENV,
    RetryPolicy,
    TransientError,
    Transport,
    content_type,
)
from pkgtool.oci.manifest import Manifest, looks_like_html, parse_manifest
from pkgtool.oci.reference import Reference
from pkgtool.oci.source import NotFoundError
from pkgtool.streams import chunk_file

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout

# Docker Hub's API does not live at the name people write.
_HUB_API_HOST = "registry-1.docker.io"
DEFAULT_UPLOAD_CHUNK = 16 * 1024 * 1024
_MAX_TAG_PAGES = 10_000
_MAX_TAG_LIST_BYTES = 16 * 1024 * 1024


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

    transport: Transport
    insecure: frozenset[str]
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
        max_total: float | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        credentials: auth.Credentials | None = None,
        docker_config: Path | None = None,
        pool_size: int = 16,
    ) -> None:
        from pkgtool import settings

        self.registry = registry or settings.registry()
        policy = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff)
        if max_total is not None:
            policy = RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff, max_total=max_total)
        self._shared = _Shared(
            transport=Transport(policy=policy, timeout=timeout, connect_timeout=connect_timeout, pool_size=pool_size),
            insecure=frozenset(insecure) | insecure_from_env(),
            docker_config=docker_config,
            credentials={self.registry: credentials} if credentials else {},
        )
        self._shared.clients[self.registry] = self
        self._setup()

    def _setup(self) -> None:
        api_host = _HUB_API_HOST if self.registry == "docker.io" else self.registry
        self.base_url = f"{self.scheme}://{api_host}"
        self.transport = self._shared.transport
        self._auth = auth.Authenticator(
            self.registry, self.transport, credentials=self._shared.credentials.get(self.registry),
            docker_config=self._shared.docker_config,
        )

    @property
    def scheme(self) -> str:
        host = registry_host(self.registry)
        plain = is_loopback(self.registry) or self.registry in self._shared.insecure or host in self._shared.insecure
        return "http" if plain else "https"

    @property
    def retries(self) -> int:
        return self.transport.policy.retries

    def for_registry(self, registry: str) -> RegistryClient:
        """A client for ``registry`` sharing this one's transport, settings and credentials."""
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
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r})"

    # ------------------------------------------------------------------ ImageSource

    def resolve(self, ref: Reference) -> Descriptor | None:
        return self.for_registry(ref.registry).head_manifest(ref.repository, ref.locator)

    def manifest(self, ref: Reference) -> Manifest:
        found = self.for_registry(ref.registry).get_manifest_or_none(ref.repository, ref.locator)
        if found is None:
            raise NotFoundError(f"{ref}: manifest not found")
        return found

    def blob(self, ref: Reference, descriptor: Descriptor) -> BinaryIO:
        """One streamed attempt (a consumer cannot un-read bytes, so nothing is retried
        here: to keep a blob, :meth:`download_blob` it)."""
        client = self.for_registry(ref.registry)

        def chunks() -> Iterator[bytes]:
            try:
                yield from client.iter_blob(ref.repository, descriptor.digest, expected_size=descriptor.size)
            except TransientError as exc:
                raise exc.final(f"registry {client.registry}: GET blob {ref.repository}@{descriptor.digest}: "
                                f"{exc.cause}") from None

        return chunk_file(chunks(), buffer_size=blobs.READ_CHUNK)

    def referrers(self, ref: Reference, *, artifact_type: str | None = None) -> list[Descriptor]:
        if not ref.digest:
            raise PkgtoolError(f"{ref}: referrers are listed by digest, not by tag")
        return self.for_registry(ref.registry).list_referrers(ref.repository, ref.digest, artifact_type=artifact_type)

    # ------------------------------------------------------------------ general

    def ping(self) -> None:
        """Check that the registry answers the v2 API (authenticating if it asks)."""
        response = self.request("GET", "/v2/", operation="GET /v2/", scopes=())
        self.expect(response, (200,), "GET /v2/")
        response.close()

    # ------------------------------------------------------------------ manifests

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        """The descriptor of ``repository:reference`` without its body, or None if absent.

        Falls back to a GET when the registry leaves out the digest or type headers.
        """
        operation = f"HEAD manifest {self.name_of(repository, reference)}"
        response = self.request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull"),),
            headers={"Accept": mediatypes.MANIFEST_ACCEPT},
        )
        response.close()
        if response.status_code == 404:
            return None
        self.expect(response, (200,), operation)
        media_type = content_type(response)
        digest = response.headers.get("Docker-Content-Digest", "")
        length = response.headers.get("Content-Length", "")
        if media_type in mediatypes.ALL_MANIFEST_TYPES and is_digest(digest) and length.isdigit():
            if reference.startswith("sha256:") and digest != reference:
                raise DigestMismatchError(f"{self.name_of(repository, reference)}: registry says its digest is {digest}")
            return Descriptor(media_type, digest, int(length))
        found = self.get_manifest_or_none(repository, reference)
        return None if found is None else found.descriptor

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch, verify and parse a manifest or index.

        By digest, the bytes must hash to it.  By tag, they must hash to the registry's
        ``Docker-Content-Digest`` when it sends one.
        """
        found = self.get_manifest_or_none(repository, reference)
        if found is None:
            raise RegistryError(f"{self.name_of(repository, reference)}: manifest not found")
        return found

    def get_manifest_or_none(self, repository: str, reference: str) -> Manifest | None:
        name = self.name_of(repository, reference)
        operation = f"GET manifest {repository}{_sep(reference)}{reference}"

        def attempt(_n: int) -> Manifest | None:
            response = self.request(
                "GET", f"/v2/{repository}/manifests/{reference}", operation=operation,
                scopes=(auth.repository_scope(repository, "pull"),),
                headers={"Accept": mediatypes.MANIFEST_ACCEPT},
            )
            with response:
                if response.status_code == 404:
                    return None
                self.expect(response, (200,), operation)
                ctype = content_type(response)
                length = response.headers.get("Content-Length", "")
                if length.isdigit() and int(length) > mediatypes.MAX_MANIFEST_BYTES:
                    raise RegistryError(
                        f"{name}: manifest is {length} bytes, over the {mediatypes.MAX_MANIFEST_BYTES}-byte limit"
                    )
                data = self.read_bounded(response, mediatypes.MAX_MANIFEST_BYTES, operation, what="manifest")
                announced = response.headers.get("Docker-Content-Digest", "")
            if ctype == "text/html" or looks_like_html(data):
                raise RegistryError(
                    f"registry {self.registry}: {operation}: got an HTML page, not a manifest "
                    "(is this really a registry?)"
                )
            actual = sha256_digest(data)
            expected = reference if reference.startswith("sha256:") else announced
            if (reference.startswith("sha256:") or is_digest(expected)) and actual != expected:
                # Bytes damaged on the way are worth another try; a registry that serves other
                # content every time runs out of attempts and says so.
                raise TransientError(f"manifest content hashes to {actual}, not {expected}", final=DigestMismatchError)
            return parse_manifest(data, content_type=ctype, digest=actual, source=name)

        return self.transport.retrying(self.registry, operation, attempt)

    def get_manifest_bytes_or_none(self, repository: str, reference: str) -> bytes | None:
        found = self.get_manifest_or_none(repository, reference)
        return None if found is None else found.data

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> Descriptor:
        """Store a manifest at a tag or at its digest; returns its descriptor.

        The bytes are validated first (a malformed manifest is our bug, and a registry
        may accept it), and the digest the registry reports must be ours.
        """
        name = self.name_of(repository, reference)
        parsed = parse_manifest(data, content_type=media_type, source=name)
        if parsed.media_type != media_type:
            raise PkgtoolError(f"{name}: manifest says mediaType {parsed.media_type}, pushed as {media_type}")
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and reference != digest:
            raise DigestMismatchError(f"{name}: manifest bytes hash to {digest}")
        operation = f"PUT manifest {repository}{_sep(reference)}{reference}"
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{reference}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull,push"),),
            headers={"Content-Type": media_type}, data=data,
        )
        with response:
            self.expect(response, (200, 201), operation)
            stored = response.headers.get("Docker-Content-Digest", "")
        if is_digest(stored) and stored != digest:
            raise DigestMismatchError(f"{name}: registry stored the manifest as {stored}, expected {digest}")
        return Descriptor(media_type, digest, len(data), artifact_type=parsed.artifact_type)

    def delete_manifest(self, repository: str, digest: str) -> None:
        check_digest(digest)
        operation = f"DELETE manifest {repository}@{digest}"
        response = self.request(
            "DELETE", f"/v2/{repository}/manifests/{digest}", operation=operation,
            scopes=(auth.repository_scope(repository, "delete"),),
        )
        with response:
            self.expect(response, (200, 202), operation)

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
            page = self.transport.retrying(
                self.registry, operation, functools.partial(self._tag_page, repository, url, params, operation)
            )
            if page is None:
                return tags
            body, url = page
            params = None  # the next link carries its own query
            tags.extend(_parse_tag_list(body, f"registry {self.registry}: {operation}"))
        raise RegistryError(f"registry {self.registry}: {operation}: more than {_MAX_TAG_PAGES} pages")

    def _tag_page(self, repository: str, url: str, params: dict[str, str] | None,
                  operation: str, _attempt: int) -> tuple[bytes, str | None] | None:
        """One page of a tag list and the next page's URL; None if the repository is unknown."""
        response = self.request("GET", url, operation=operation, params=params,
                                scopes=(auth.repository_scope(repository, "pull"),))
        with response:
            if response.status_code == 404:
                return None
            self.expect(response, (200,), operation)
            body = self.read_bounded(response, _MAX_TAG_LIST_BYTES, operation, what="tag list")
            return body, _next_link(response.headers.get("Link", ""), response.url)

    # ------------------------------------------------------------------ blobs

    def blob_exists(self, repository: str, digest: str) -> bool:
        check_digest(digest)
        operation = f"HEAD blob {repository}@{digest}"
        response = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", operation=operation,
            scopes=(auth.repository_scope(repository, "pull"),),
        )
        response.close()
        if response.status_code == 404:
            return False
        self.expect(response, (200,), operation)
        return True

    # ------------------------------------------------------------------ referrers

    def iter_blob(self, repository: str, digest: str, *, expected_size: int | None = None) -> Iterator[bytes]:
        """One streamed, hashed download attempt (:func:`pkgtool.oci.blobs.iter_blob`)."""
        return blobs.iter_blob(self, repository, digest, expected_size=expected_size)

    def download_blob(self, repository: str, descriptor: Descriptor, layout: Layout) -> Path:
        """Into the layout cache, verified and retried (:func:`pkgtool.oci.blobs.download_blob`)."""
        return blobs.download_blob(self, repository, descriptor, layout)

    def get_blob_bytes(self, repository: str, digest: str, *, max_size: int) -> bytes:
        return blobs.get_blob_bytes(self, repository, digest, max_size=max_size)

    def push_blob_bytes(self, repository: str, data: bytes) -> str:
        return blobs.push_blob_bytes(self, repository, data)

    def push_blob(self, repository: str, source: bytes | BinaryIO, *, digest: str, size: int,
                  chunk_size: int | None = None, mount_from: str | None = None) -> str:
        """Upload unless present, then confirm (:func:`pkgtool.oci.blobs.push_blob`)."""
        return blobs.push_blob(self, repository, source, digest=digest, size=size, chunk_size=chunk_size,
                               mount_from=mount_from)

    def mount_blob(self, repository: str, digest: str, *, from_repository: str) -> bool:
        return blobs.mount_blob(self, repository, digest, from_repository=from_repository)

    # ------------------------------------------------------------------ referrers

    def list_referrers(self, repository: str, digest: str, *, artifact_type: str | None = None) -> list[Descriptor]:
        return referrers.list_referrers(self, repository, digest, artifact_type=artifact_type)

    def add_referrer(self, repository: str, subject: Descriptor | str, descriptor: Descriptor) -> None:
        referrers.add_referrer(self, repository, subject, descriptor)

    # ------------------------------------------------------------------ HTTP core

    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        scopes: tuple[str, ...],
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        data: bytes | BinaryIO | None = None,
        retry: bool = True,
    ) -> requests.Response:
        """Send (with the transport's retries unless ``retry`` is off); on a 401,
        authenticate once and send again."""
        full_url = self.absolute(url)
        response = self._send(method, full_url, operation, headers, params, data, self._auth.header(scopes), retry)
        if response.status_code != 401:
            return response
        challenge_text = response.headers.get("WWW-Authenticate", "")
        response.close()
        header = self._auth.authenticate(challenge_text, scopes, operation)
        return self._send(method, full_url, operation, headers, params, data, header, retry)

    def _send(self, method: str, url: str, operation: str, headers: dict[str, str] | None,
              params: dict[str, str] | None, data: bytes | BinaryIO | None, authorization: str | None,
              retry: bool) -> requests.Response:
        all_headers = dict(headers or {})
        if authorization:
            all_headers["Authorization"] = authorization
        return self.transport.send(method, url, registry=self.registry, operation=operation, headers=all_headers,
                               params=params, data=data, retry=retry)

    def absolute(self, url: str) -> str:
        return url if url.startswith(("http://", "https://")) else urljoin(self.base_url + "/", url)

    def name_of(self, repository: str, reference: str) -> str:
        return f"{self.registry}/{repository}{_sep(reference)}{reference}"

    def expect(self, response: requests.Response, ok: tuple[int, ...], operation: str) -> None:
        self.transport.expect(response, ok, registry=self.registry, operation=operation)

    def read_bounded(self, response: requests.Response, limit: int, operation: str, *, what: str) -> bytes:
        return self.transport.read_bounded(response, limit, registry=self.registry, operation=operation, what=what)


# --------------------------------------------------------------------------- pure helpers


def _sep(reference: str) -> str:
    return "@" if reference.startswith("sha256:") else ":"



def _next_link(header: str, current_url: str) -> str | None:
    """The ``rel="next"`` target of a Link header, made absolute."""
    for part in header.split(","):
        target, _, rest = part.partition(";")
        target = target.strip()
        if target.startswith("<") and target.endswith(">") and 'rel="next"' in rest.replace(" ", ""):
            return urljoin(current_url, target[1:-1])
    return None


def _parse_tag_list(body: bytes, context: str) -> list[str]:
    from pkgtool.jsonio import load_object

    doc = load_object(body, what=f"{context}: the answer", error=RegistryError)
    tags = doc.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RegistryError(f"{context}: 'tags' is not a list of strings")
    return list(tags)
